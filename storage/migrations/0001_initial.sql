-- The core schema: tenants and their domains, receiving routes, API keys, contacts, threads,
-- outbound emails (the columns reply tracking reads) and received emails.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE domains (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name               text NOT NULL UNIQUE CHECK (name = lower(name)),
    verified           boolean NOT NULL DEFAULT false,
    verified_at        timestamptz,
    receiving_enabled  boolean NOT NULL DEFAULT false,
    -- A subdomain such as inbound.example.com whose MX points here; reply addresses use it.
    reply_domain       text UNIQUE CHECK (reply_domain = lower(reply_domain)),
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX domains_tenant ON domains (tenant_id);

CREATE TABLE routes (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    domain_id   uuid NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('exact', 'alias', 'catch_all')),
    -- 'local@domain' in lowercase, or '*@domain' for the domain's catch-all.
    address     text NOT NULL UNIQUE CHECK (address = lower(address)),
    -- For an alias: the address the message is stored under.
    target      text CHECK ((kind = 'alias') = (target IS NOT NULL)),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX routes_domain ON routes (domain_id);

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name          text NOT NULL,
    -- SHA-256 of the key; the key itself is shown once and never stored.
    key_hash      bytea NOT NULL UNIQUE,
    key_prefix    text NOT NULL,
    permission    text NOT NULL DEFAULT 'full_access'
                  CHECK (permission IN ('full_access', 'sending_access')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE contacts (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email         text NOT NULL CHECK (email = lower(email)),
    first_name    text,
    last_name     text,
    unsubscribed  boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, email)
);

CREATE TABLE threads (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    subject          text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_message_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX threads_tenant_recent ON threads (tenant_id, last_message_at DESC);

CREATE TABLE emails (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    thread_id      uuid REFERENCES threads (id),
    from_address   text NOT NULL,
    to_addresses   text[] NOT NULL DEFAULT '{}',
    subject        text,
    -- Without angle brackets, as in received_emails.message_id.
    message_id     text NOT NULL,
    -- Nulling reply_token revokes it (DESIGN.md 4).
    reply_token    text,
    reply_address  text,
    reply_domain   text,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX emails_tenant_message_id ON emails (tenant_id, message_id);
CREATE INDEX emails_thread ON emails (thread_id);

CREATE TABLE received_emails (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    received_at        timestamptz NOT NULL DEFAULT now(),
    -- The SMTP transaction (RFC 5321): envelope, peer, and how it was carried.
    mail_from          text NOT NULL,
    rcpt_to            text[] NOT NULL,
    remote_ip          inet,
    helo               text,
    tls                boolean NOT NULL DEFAULT false,
    tls_version        text,
    -- Our trace field (RFC 5321 4.4), kept apart so `raw` stays byte for byte as received.
    received_header    text,
    raw                bytea NOT NULL,
    size               integer NOT NULL,
    -- What could be read from the message; malformed MIME leaves some of it empty.
    headers            jsonb NOT NULL DEFAULT '[]',
    message_id         text,
    in_reply_to        text,
    "references"       text,
    subject            text,
    from_address       text,
    from_name          text,
    to_addresses       text[] NOT NULL DEFAULT '{}',
    cc_addresses       text[] NOT NULL DEFAULT '{}',
    reply_to_addresses text[] NOT NULL DEFAULT '{}',
    sent_at            timestamptz,
    text_body          text,
    html_body          text,
    attachments        jsonb NOT NULL DEFAULT '[]',
    parse_defects      text[] NOT NULL DEFAULT '{}',
    -- Reply matching.
    reply_match_status text NOT NULL CHECK (reply_match_status IN ('matched', 'unmatched')),
    reply_to_email_id  uuid REFERENCES emails (id),
    thread_id          uuid REFERENCES threads (id),
    contact_id         uuid REFERENCES contacts (id) ON DELETE SET NULL,
    match_source       text,
    token_failure      text,
    token_failure_source text
);
CREATE INDEX received_tenant_recent ON received_emails (tenant_id, received_at DESC, id DESC);
CREATE INDEX received_tenant_message_id ON received_emails (tenant_id, message_id);
CREATE INDEX received_thread ON received_emails (thread_id);
