"""Submission (587 STARTTLS, 465 implicit TLS): its protocol with AUTH, logins, handler.
May import mta.smtp, mta's root modules, policy and storage."""
