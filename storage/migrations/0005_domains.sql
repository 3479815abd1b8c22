-- Domains over the API: Resend's region of a domain. One server has one region, so the value
-- changes nothing about how mail is sent; it is kept so a client reads back what it chose.
ALTER TABLE domains
    ADD COLUMN region text NOT NULL DEFAULT 'us-east-1'
        CHECK (region IN ('us-east-1', 'eu-west-1', 'sa-east-1', 'ap-northeast-1'));
