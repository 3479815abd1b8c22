"""Reply stripping: the new text of a received message, without quoted history or signature.

Pure functions over strings (plain text by lines, HTML through lxml); imports nothing of ours.
"""
