"""What a send request may say, and the message built from it (a reply's included).
May import policy's root modules only."""
