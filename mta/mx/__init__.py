"""The MX (port 25): its handler turns RCPT and DATA into policy inputs and storage calls.
May import mta.smtp, mta's root modules, policy and storage."""
