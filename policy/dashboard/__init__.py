"""Pure rules of the dashboard: password hashing, session and CSRF checks, search syntax.

May import `policy` and its libraries (argon2); no sockets and no SQL, like the rest of policy/.
"""
