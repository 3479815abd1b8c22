"""Inbound's own API surfaces (the `inboundemail` SDK's /api/e2/ and `@inboundemail/sdk`'s mail
reply) mapped onto our reply pipeline. May import api's shared modules, policy and storage."""
