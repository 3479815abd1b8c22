"""The suppression list over HTTP in Resend's shapes (/suppressions), so resend.Suppressions
works unchanged. Imports api's shared parts and storage.suppressions."""
