"""Each tenant's suppression list in SQL: adding (by hand, a bounce or a complaint), listing,
finding and removing entries. Imports only storage."""
