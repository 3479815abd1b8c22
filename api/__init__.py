"""The HTTP API: sending, conversations, ingesters and account resources, one subpackage each.
May import policy and storage, never mta; the app, auth, context and errors are at the root."""
