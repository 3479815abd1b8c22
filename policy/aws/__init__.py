"""Amazon SNS messages and SES receiving notifications: parsed and checked.
May import policy's root modules only."""
