"""Reply stripping: the new text of a received message, without quoted history or signature.
Pure functions (plain text by lines, HTML through lxml); may import only policy.inbound.message."""
