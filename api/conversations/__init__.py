"""Conversations: received mail, threads, contacts, attachments out of raw messages.
May import api's root modules, api.account (path ids), policy and storage."""
