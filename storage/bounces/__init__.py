"""Reports about our deliveries in SQL: the delivery a bounce address names, and applying a
DSN or complaint to a delivery with its event. Imports only storage."""
