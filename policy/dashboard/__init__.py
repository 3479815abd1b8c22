"""Pure rules of the dashboard: passwords, sessions and CSRF, TOTP, search syntax, mail bodies.
May import `policy` and its libraries (argon2, pyotp, nh3); no sockets and no SQL."""
