"""The one catalogue of SMTP replies, shared by the handlers and the tests.

Each reply carries its basic code (RFC 5321 section 4.2) and enhanced status code (RFC 3463);
the two must agree in class, which `tests/policy/test_replies.py` holds for every entry. Public
texts are generic and actionable: they never name a mechanism, a setting or an internal reason.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str
    text: str

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def format(self, **values: str) -> Reply:
        """The reply with its `{placeholders}` filled (the catalogue keeps the template)."""
        return Reply(self.code, self.enhanced, self.text.format(**values))

    def __str__(self) -> str:
        if not self.enhanced:
            return f"{self.code} {self.text}"
        return f"{self.code} {self.enhanced} {self.text}"


# Greeting and session. 220/221 carry no enhanced code on the wire (RFC 2034 section 3 applies
# them to replies after EHLO); "2.0.0" is kept here so the catalogue has one shape.
S220_READY = Reply(220, "2.0.0", "ESMTP OpenSend ready")
S221_BYE = Reply(221, "2.0.0", "Bye")
S250_OK = Reply(250, "2.0.0", "OK")
S250_SENDER_OK = Reply(250, "2.1.0", "Sender OK")
S250_RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
S250_QUEUED = Reply(250, "2.0.0", "Ok: queued as {id}")
S250_HELO = Reply(250, "2.0.0", "{hostname}")  # RFC 5321 section 4.1.1.1: the server's name
# RFC 5321 section 4.1.1.8: HELP answers 211 or 214.
S214_HELP = Reply(
    214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP (RFC 5321)"
)
S220_READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")  # RFC 3207 section 4
# RFC 5321 section 3.5.3: VRFY may answer 252 when it will not say whether a mailbox exists.
S252_CANNOT_VRFY = Reply(
    252, "2.1.5", "Cannot verify the user, but will accept the message and attempt delivery"
)
# RFC 4954 section 6 gives AUTH its replies: 235 2.7.0, 454 4.7.0, 530 5.7.0, 535 5.7.8 and
# 538 5.7.11, with RFC 3463 enhanced codes of the same class.
S235_AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
# RFC 2034 section 3: 354 is an intermediate reply and carries no enhanced code.
S354_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")

# Temporary failures: the sender keeps the message and tries again (RFC 5321 section 4.2.1).
S421_TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later")
S421_TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors in this session, closing connection")
S421_TIMEOUT = Reply(421, "4.4.2", "Timeout waiting for input, closing connection")
S421_SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later")
# RFC 3207 section 4: STARTTLS offered, but TLS cannot start now.
S454_TLS_NOT_AVAILABLE = Reply(454, "4.7.0", "TLS not available, try again later")
S451_TEMP_STORAGE = Reply(451, "4.3.0", "Temporary problem storing the message, try again later")
# What handle_exception answers for an exception no code path expected (aiosmtpd's own answer
# would be "500 Error: (...)", a permanent failure naming the exception). The SMTP fuzz test
# holds that no input produces it.
S451_LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")
S451_TEMP_LOOKUP = Reply(
    451, "4.4.3", "Temporary problem looking up the recipient, try again later"
)
S452_TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients in this message")
# RFC 5321 section 4.2.2 (452, insufficient system storage) and RFC 3463 X.3.1 (mail system
# full): the messages arriving at once hold all the memory this server gives them; the
# client's queue keeps this one and tries again.
S452_DATA_MEMORY = Reply(
    452, "4.3.1", "Insufficient system storage: too many messages arriving at once, try again later"
)
S451_TEMP_SENDER_LOOKUP = Reply(
    451, "4.4.3", "Temporary problem checking the sender address, try again later"
)
# Submission: a lookup of the key failed (not the key's fault), or the client's address is locked
# out after too many failed logins: it may try again later, so a temporary code (RFC 4954).
S454_AUTH_TEMPORARY = Reply(454, "4.7.0", "Temporary authentication failure, try again later")
S454_AUTH_LOCKED_OUT = Reply(
    454,
    "4.7.0",
    "Too many failed authentication attempts from your address; try again later",
)
S421_AUTH_LOCKOUT = Reply(
    421,
    "4.7.0",
    "Too many failed authentication attempts; closing connection, try again later",
)
# A plan's monthly sending limit (HTTP 429 on the API). RFC 5321 section 4.2.3 reads 450 as
# "temporarily blocked for policy reasons": the client's queue keeps the message and retries,
# where a 5xx would bounce mail the next month or a raised limit would have let through.
S450_SENDING_LIMIT = Reply(
    450,
    "4.7.1",
    "Monthly sending limit of this account reached; try again later or ask for a higher limit",
)

# Permanent failures.
S500_LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
# RFC 5321 section 4.5.3.1.4: a command line is at most 512 octets (more with extensions).
S500_COMMAND_TOO_LONG = Reply(500, "5.5.2", "Command line too long")
S500_SYNTAX_ERROR = Reply(500, "5.5.2", "Syntax error: empty or unreadable command line")
# RFC 3463 X.5.1 "invalid command". The command is not echoed: it is the client's bytes.
S500_UNKNOWN_COMMAND = Reply(500, "5.5.1", "Command not recognized")
S501_HELO_SYNTAX = Reply(501, "5.5.4", "Syntax: HELO hostname")
S501_EHLO_SYNTAX = Reply(501, "5.5.4", "Syntax: EHLO hostname")
S501_MAIL_SYNTAX = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address> [SP <mail-parameters>]")
S501_RCPT_SYNTAX = Reply(501, "5.5.4", "Syntax: RCPT TO:<address> [SP <rcpt-parameters>]")
S501_VRFY_SYNTAX = Reply(501, "5.5.4", "Syntax: VRFY <address>")
S501_NO_ARGUMENT = Reply(501, "5.5.4", "Syntax error: this command takes no argument")
# RFC 6152 section 2 and RFC 6531 section 3.4: BODY=7BIT or 8BITMIME; SMTPUTF8 takes no value.
S501_BODY = Reply(501, "5.5.4", "BODY must be 7BIT or 8BITMIME")
S501_SMTPUTF8_ARGUMENT = Reply(501, "5.5.4", "SMTPUTF8 takes no value")
S501_AUTH_ABORTED = Reply(501, "5.7.0", "Authentication cancelled")  # RFC 4954 section 4: "*"
S502_EXPN = Reply(502, "5.5.1", "EXPN not implemented")
S502_TOO_MANY_UNKNOWN = Reply(502, "5.5.1", "Too many unrecognized commands, closing connection")
S501_SYNTAX_ADDRESS = Reply(501, "5.1.3", "Bad address syntax")
S501_SYNTAX_SENDER = Reply(501, "5.1.7", "Bad sender address syntax")
S501_AUTH_SYNTAX = Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
S501_AUTH_CREDENTIALS = Reply(
    501, "5.5.2", "Cannot read the credentials: send them base64-encoded, as SASL PLAIN or LOGIN"
)
S502_AUTH_NOT_HERE = Reply(
    502, "5.5.1", "AUTH not available on this port; submit mail on port 587 or 465"
)
S503_BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
S503_HELO_FIRST = Reply(503, "5.5.1", "Send HELO or EHLO first")
S503_EHLO_FIRST = Reply(503, "5.5.1", "Send EHLO first")
S503_EHLO_BEFORE_AUTH = Reply(503, "5.5.1", "Send EHLO before AUTH")
S503_MAIL_FIRST = Reply(503, "5.5.1", "Send MAIL first")
S503_NESTED_MAIL = Reply(503, "5.5.1", "Nested MAIL command: finish or RSET the transaction first")
S503_NO_RECIPIENTS = Reply(503, "5.5.1", "No valid recipients")
S503_ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")
S503_AUTH_IN_TRANSACTION = Reply(503, "5.5.1", "AUTH is not allowed during a mail transaction")
S503_ALREADY_TLS = Reply(503, "5.5.1", "TLS is already active")
S504_AUTH_MECHANISM = Reply(
    504, "5.5.4", "Unrecognized authentication mechanism; use PLAIN or LOGIN"
)
S530_STARTTLS_FIRST = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
S530_AUTH_REQUIRED = Reply(
    530, "5.7.0", "Authentication required: log in with AUTH, an API key as the password"
)
S530_KEY_REVOKED = Reply(
    530, "5.7.0", "Authentication required: the API key this session logged in with was revoked"
)
S535_AUTH_INVALID = Reply(
    535,
    "5.7.8",
    "Authentication credentials invalid: the password must be an API key of your account",
)
S538_ENCRYPTION_REQUIRED = Reply(
    538, "5.7.11", "Encryption required for authentication: issue STARTTLS first"
)
S550_NO_SUCH_USER = Reply(550, "5.1.1", "No such user here")
S550_RELAY_DENIED = Reply(
    550, "5.7.1", "Relaying denied: this server only accepts mail for its own domains"
)
# RFC 5321 section 4.2.2: 553 "mailbox name not allowed"; RFC 3463 X.7.1: refused by policy.
# After DATA too, for the From: field, as the contract asks; any 5xx there is final.
S553_SENDER_NOT_ALLOWED = Reply(
    553, "5.7.1", "Sender address rejected: not on a verified domain of your account"
)
S553_SENDER_KEY_DOMAIN = Reply(
    553,
    "5.7.1",
    "Sender address rejected: this API key may only send from its own domain, not {domain}",
)
S553_SENDER_UNVERIFIED_DOMAIN = Reply(
    553, "5.7.1", "Sender address rejected: {domain} is not a verified domain of your account"
)
S553_FROM_KEY_DOMAIN = Reply(
    553, "5.7.1", "Message refused: this API key may only send from its own domain, not {domain}"
)
S553_FROM_UNVERIFIED_DOMAIN = Reply(
    553, "5.7.1", "Message refused: {domain} is not a verified domain of your account"
)
# aiosmtpd's parser found no RFC 5321 path at all.
S553_MALFORMED_ADDRESS = Reply(553, "5.1.3", "Malformed address")
S553_FROM_NOT_ALLOWED = Reply(
    553,
    "5.7.1",
    "Message refused: the From: field must be one address on a verified domain of your account",
)
S550_MALFORMED_HEADER = Reply(
    550,
    "5.6.0",
    "Message refused: a header field name must be printable ASCII followed directly by a colon",
)
# RFC 5321 section 2.3.8: CR and LF occur only together, as CRLF. A server that reads a line end
# elsewhere may split a message where the next hop does not (SMTP smuggling). X.5 (the
# protocol), not X.6 (the content): line ends are SMTP's framing. Postfix's
# smtpd_forbid_bare_newline = reject answers 550 5.5.2 to a bare LF; we refuse a bare CR too.
S550_BARE_NEWLINE = Reply(
    550,
    "5.5.2",
    "Message refused: a line ends in a bare LF or holds a bare CR; every line must end in CRLF",
)
# RFC 5322 section 2.1.1: a line is at most 998 characters. A long body line is re-encoded
# (policy.submission.long_lines); a header line cannot be without changing the field, so the message
# is refused: 554, RFC 5321's "transaction failed" after DATA, with RFC 3463's X.6.0 "other media
# error" (the content is at fault; not the mailbox, X.1, nor the protocol, X.5).
S554_HEADER_LINE_TOO_LONG = Reply(
    554,
    "5.6.0",
    "Message refused: a header line is longer than 998 characters; fold or shorten that field",
)
S554_MIME_TOO_DEEP = Reply(
    554, "5.6.0", "Message refused: MIME parts are nested more than 100 levels deep"
)
S554_LOOP = Reply(554, "5.4.6", "Message refused: too many Received headers, probable mail loop")
S552_TOO_BIG = Reply(552, "5.3.4", "Message too big for this server")
# RFC 5321 section 4.1.1.11 and RFC 1869: a MAIL or RCPT parameter that was not advertised.
S555_MAIL_PARAMETERS = Reply(555, "5.5.4", "MAIL FROM parameters not recognized or not implemented")
S555_RCPT_PARAMETERS = Reply(555, "5.5.4", "RCPT TO parameters not recognized or not implemented")
# RFC 6531 section 3.4: an address with non-ASCII characters needs the SMTPUTF8 parameter on
# MAIL; without it the server answers 553 with X.6.7, "non-ASCII addresses not permitted for
# that sender/recipient" (RFC 6531's own enhanced code), as Postfix does.
S553_NON_ASCII_ADDRESS = Reply(
    553,
    "5.6.7",
    "Address with non-ASCII characters needs SMTPUTF8: declare it on MAIL FROM, or use an "
    "ASCII address",
)
# The submission ports do not offer SMTPUTF8 (outbound delivery does not speak it).
S553_NON_ASCII_NOT_SENDABLE = Reply(
    553,
    "5.6.7",
    "Addresses with non-ASCII characters cannot be sent from here; use an ASCII address",
)
S554_NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")

# Every entry above, for the class-agreement test and for documentation.
CATALOGUE: dict[str, Reply] = {
    name: value for name, value in globals().items() if isinstance(value, Reply)
}

# The replies aiosmtpd writes itself, by their exact text, and the entry of this catalogue the
# server answers instead (mta.smtp.protocol's push): so every reply has an enhanced code, a text of
# ours, and never echoes the client's bytes (a CR in an echoed command would split the reply).
ENGINE_REPLIES: dict[str, Reply] = {
    "221 Bye": S221_BYE,
    "250 OK": S250_OK,
    "252 Cannot VRFY user, but will accept message and attempt delivery": S252_CANNOT_VRFY,
    "500 Command line too long": S500_COMMAND_TOO_LONG,
    "500 Error: bad syntax": S500_SYNTAX_ERROR,
    "501 5.5.2 Can't decode base64": S501_AUTH_CREDENTIALS,
    "501 5.7.0 Auth aborted": S501_AUTH_ABORTED,
    "501 Error: BODY can only be one of 7BIT, 8BITMIME": S501_BODY,
    "501 Error: SMTPUTF8 takes no arguments": S501_SMTPUTF8_ARGUMENT,
    "501 Syntax: HELO hostname": S501_HELO_SYNTAX,
    "501 Syntax: MAIL FROM: <address>": S501_MAIL_SYNTAX,
    "501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]": S501_MAIL_SYNTAX,
    "501 Syntax: QUIT": S501_NO_ARGUMENT,
    "501 Syntax: RCPT TO: <address>": S501_RCPT_SYNTAX,
    "501 Syntax: RCPT TO: <address> [SP <mail-parameters>]": S501_RCPT_SYNTAX,
    "501 Syntax: RSET": S501_NO_ARGUMENT,
    "501 Syntax: VRFY <address>": S501_VRFY_SYNTAX,
    "502 5.5.1 Too many unrecognized commands, goodbye.": S502_TOO_MANY_UNKNOWN,
    "502 EXPN not implemented": S502_EXPN,
    "503 Error: need MAIL command": S503_MAIL_FIRST,
    "503 Error: nested MAIL command": S503_NESTED_MAIL,
    "503 Error: send EHLO first": S503_EHLO_FIRST,
    "503 Error: send HELO first": S503_HELO_FIRST,
    "552 Error: message size exceeds fixed maximum message size": S552_TOO_BIG,
    "553 5.1.3 Error: malformed address": S553_MALFORMED_ADDRESS,
    "555 MAIL FROM parameters not recognized or not implemented": S555_MAIL_PARAMETERS,
    "555 RCPT TO parameters not recognized or not implemented": S555_RCPT_PARAMETERS,
}
# The engine replies that carry the client's own bytes after a fixed start.
ENGINE_REPLY_PREFIXES: tuple[tuple[str, Reply], ...] = (
    ('500 Error: command "', S500_UNKNOWN_COMMAND),
    ("502 Could not VRFY ", S501_SYNTAX_ADDRESS),
)


def engine_reply(line: str) -> str:
    """The catalogue's reply for a reply aiosmtpd wrote; any other line is left as it is, but
    given an enhanced code (`with_enhanced_code`) should a new engine version add a reply."""
    known = ENGINE_REPLIES.get(line)
    if known is None:
        known = next((r for start, r in ENGINE_REPLY_PREFIXES if line.startswith(start)), None)
    return with_enhanced_code(line) if known is None else str(known)


# The protocol engine (aiosmtpd) writes some replies of its own without an enhanced code. Since
# we advertise ENHANCEDSTATUSCODES, RFC 2034 section 3 asks for one on every reply after EHLO;
# these are the codes RFC 3463 gives each basic code in the situations aiosmtpd uses them.
ENHANCED_FOR_ENGINE_REPLY: dict[int, str] = {
    211: "2.0.0",
    214: "2.0.0",
    220: "2.0.0",  # "Ready to start TLS" (RFC 3207)
    221: "2.0.0",
    235: "2.7.0",
    250: "2.0.0",
    252: "2.0.0",
    334: "",  # AUTH challenges carry no status code (RFC 4954 section 4)
    354: "",  # RFC 2034: no enhanced code on 354
    421: "4.7.0",
    451: "4.3.0",
    454: "4.7.0",
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    530: "5.7.0",
    535: "5.7.8",
    538: "5.7.11",
    550: "5.0.0",
    552: "5.3.4",
    553: "5.1.3",
    554: "5.0.0",
    555: "5.5.4",
}


def with_enhanced_code(line: str) -> str:
    """Give an engine reply an enhanced code when it lacks one; ours already carry theirs."""
    code_text, sep, rest = line[:3], line[3:4], line[4:]
    if not code_text.isdigit() or sep not in (" ", "-"):
        return line
    if rest[:1].isdigit() and rest[1:2] == ".":
        enhanced, space, text = rest.partition(" ")
        return f"{code_text}{sep}{enhanced}{space}{text.removeprefix('Error: ')}"
    enhanced = ENHANCED_FOR_ENGINE_REPLY.get(int(code_text), "")
    if not enhanced:
        return line
    # Drop aiosmtpd's "Error: " prefix: the code already says it is an error.
    rest = rest.removeprefix("Error: ")
    return f"{code_text}{sep}{enhanced} {rest}"
