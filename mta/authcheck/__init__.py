"""SPF, DKIM, ARC and DMARC checks of received mail, and the worker that runs them.
May import mta's root modules (dns, metrics, wakeup), policy and storage."""
