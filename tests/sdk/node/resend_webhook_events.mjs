// Resend's Node SDK on the events a webhook received: list, get, their attempts, replay, and
// `webhooks.verify` (the `standardwebhooks` package) of a delivery our workers signed and sent.
// Context (argv[2]): the webhook, one delivered event, and the receiver's copies with a secret each.
import { Resend } from "resend";
import { call, print } from "./capture.mjs";

const ctx = JSON.parse(process.argv[2]);
const resend = new Resend(process.env.RESEND_API_KEY);
const sdk = (answer) => ({ data: answer.data, error: answer.error });
const R = (path) => `Data<Resend${path}>`;
const ids = { webhookId: ctx.webhook, eventId: ctx.event };
// `verify` throws on a bad signature and returns the payload: the payload is its data.
const verified = (answer) => ({ data: answer, error: null });
const VERIFIED = "ReturnType<Resend[\"webhooks\"][\"verify\"]>";

const listed = await call("webhooks.events.list", R('["webhooks"]["events"]["list"]'), () =>
  resend.webhooks.events.list({ webhookId: ctx.webhook, limit: 5 }), sdk);
// Every event listed, so each payload type we emit is held to the SDK's union.
for (const event of listed?.data ?? []) {
  await call(`webhooks.events.get (${event.type})`, R('["webhooks"]["events"]["get"]'), () =>
    resend.webhooks.events.get({ webhookId: ctx.webhook, eventId: event.id }), sdk);
}
await call("webhooks.events.attempts.list", R('["webhooks"]["events"]["attempts"]["list"]'), () =>
  resend.webhooks.events.attempts.list({ ...ids, limit: 5 }), sdk);
await call("webhooks.events.attempts.list (no HTTP answer)", R('["webhooks"]["events"]["attempts"]["list"]'), () =>
  resend.webhooks.events.attempts.list(ctx.unanswered), sdk);
for (const post of ctx.posts) {
  await call(`webhooks.verify (${post.name})`, VERIFIED, () =>
    resend.webhooks.verify({
      payload: post.body,
      headers: { id: post.headers["webhook-id"], timestamp: post.headers["webhook-timestamp"], signature: post.headers["webhook-signature"] },
      webhookSecret: post.secret,
    }), verified);
}
// A body changed after signing must be refused: the check is real, not a parse.
await call("webhooks.verify refuses a changed body", "{ refused: true }", () => {
  const post = ctx.posts[0];
  try {
    resend.webhooks.verify({
      payload: post.body.replace("}", ',"x":1}'),
      headers: { id: post.headers["webhook-id"], timestamp: post.headers["webhook-timestamp"], signature: post.headers["webhook-signature"] },
      webhookSecret: post.secret,
    });
    return { data: null, error: { name: "accepted", message: "a changed body verified" } };
  } catch {
    return { data: { refused: true }, error: null };
  }
}, (answer) => answer);
await call("webhooks.events.replay", R('["webhooks"]["events"]["replay"]'), () => resend.webhooks.events.replay(ids), sdk);

print();
