// Resend's Node SDK, unchanged, pointed at the server by RESEND_BASE_URL: every method whose
// route the server serves. Context (domain, received email) comes as JSON in argv[2].
import { Resend } from "resend";
import { call, print } from "./capture.mjs";

const ctx = JSON.parse(process.argv[2]);
const resend = new Resend(process.env.RESEND_API_KEY);
const sdk = (answer) => ({ data: answer.data, error: answer.error });
const R = (path) => `Data<Resend${path}>`;
const inHours = (hours) => new Date(Date.now() + hours * 3600_000).toISOString();
const from = `Acme <onboarding@${ctx.domain}>`;

const sent = await call("emails.send", R('["emails"]["send"]'), () =>
  resend.emails.send({
    from,
    to: ["delivered@example.net"],
    cc: "cc@example.net",
    bcc: ["bcc@example.net"],
    replyTo: "support@example.net",
    subject: "hello world",
    html: "<strong>it works!</strong><img src=\"cid:logo\">",
    text: "it works!",
    headers: { "X-Entity-Ref-ID": "123456789" },
    tags: [{ name: "category", value: "confirm_email" }],
    attachments: [
      { filename: "invoice.txt", content: Buffer.from("total: 42\n") },
      { filename: "logo.png", content: Buffer.from("png").toString("base64"), contentType: "image/png", contentId: "logo" },
    ],
  }, { idempotencyKey: `sdk-${ctx.domain}` }), sdk);
const scheduled = await call("emails.send (scheduledAt)", R('["emails"]["send"]'), () =>
  resend.emails.send({ from, to: "later@example.net", subject: "later", text: "later", scheduledAt: inHours(1) }), sdk);
await call("emails.get", R('["emails"]["get"]'), () => resend.emails.get(sent?.id ?? "none"), sdk);
await call("emails.list", R('["emails"]["list"]'), () => resend.emails.list({ limit: 2 }), sdk);
await call("emails.update", R('["emails"]["update"]'), () =>
  resend.emails.update({ id: scheduled?.id ?? "none", scheduledAt: inHours(2) }), sdk);
await call("emails.cancel", R('["emails"]["cancel"]'), () => resend.emails.cancel(scheduled?.id ?? "none"), sdk);
const sentAttachments = await call("emails.attachments.list", R('["emails"]["attachments"]["list"]'), () =>
  resend.emails.attachments.list({ emailId: sent?.id ?? "none" }), sdk);
await call("emails.attachments.get", R('["emails"]["attachments"]["get"]'), () =>
  resend.emails.attachments.get({ emailId: sent?.id ?? "none", id: sentAttachments?.data?.[0]?.id ?? "none" }), sdk);

await call("batch.send", R('["batch"]["send"]'), () =>
  resend.batch.send([
    { from, to: "a@example.net", subject: "one", text: "one" },
    { from, to: ["b@example.net"], subject: "two", html: "<p>two</p>" },
  ]), sdk);

await call("emails.receiving.list", R('["emails"]["receiving"]["list"]'), () => resend.emails.receiving.list({ limit: 5 }), sdk);
await call("emails.receiving.get", R('["emails"]["receiving"]["get"]'), () => resend.emails.receiving.get(ctx.received), sdk);
const receivedAttachments = await call("emails.receiving.attachments.list", R('["emails"]["receiving"]["attachments"]["list"]'), () =>
  resend.emails.receiving.attachments.list({ emailId: ctx.received }), sdk);
await call("emails.receiving.attachments.get", R('["emails"]["receiving"]["attachments"]["get"]'), () =>
  resend.emails.receiving.attachments.get({ emailId: ctx.received, id: receivedAttachments?.data?.[0]?.id ?? "none" }), sdk);
await call("emails.receiving.forward", R('["emails"]["receiving"]["forward"]'), () =>
  resend.emails.receiving.forward({ emailId: ctx.received, from, to: "team@example.net" }), sdk);
await call("emails.receiving.forward (wrapped)", R('["emails"]["receiving"]["forward"]'), () =>
  resend.emails.receiving.forward({ emailId: ctx.received, from, to: ["team@example.net"], passthrough: false, text: "FYI", html: "<p>FYI</p>" }), sdk);

const domain = await call("domains.create", R('["domains"]["create"]'), () =>
  resend.domains.create({ name: `sdk.${ctx.domain}` }), sdk);
await call("domains.get", R('["domains"]["get"]'), () => resend.domains.get(domain?.id ?? "none"), sdk);
await call("domains.list", R('["domains"]["list"]'), () => resend.domains.list(), sdk);
await call("domains.update", R('["domains"]["update"]'), () =>
  resend.domains.update({ id: domain?.id ?? "none", openTracking: false, clickTracking: false, tls: "opportunistic" }), sdk);
await call("domains.verify", R('["domains"]["verify"]'), () => resend.domains.verify(domain?.id ?? "none"), sdk);
await call("domains.remove", R('["domains"]["remove"]'), () => resend.domains.remove(domain?.id ?? "none"), sdk);

const key = await call("apiKeys.create", R('["apiKeys"]["create"]'), () =>
  resend.apiKeys.create({ name: "sdk", permission: "sending_access" }), sdk);
await call("apiKeys.list", R('["apiKeys"]["list"]'), () => resend.apiKeys.list(), sdk);
await call("apiKeys.remove", R('["apiKeys"]["remove"]'), () => resend.apiKeys.remove(key?.id ?? "none"), sdk);

const contact = await call("contacts.create", R('["contacts"]["create"]'), () =>
  resend.contacts.create({ email: `jane@${ctx.domain}`, firstName: "Jane", lastName: "Doe", unsubscribed: false }), sdk);
await call("contacts.get", R('["contacts"]["get"]'), () => resend.contacts.get(contact?.id ?? "none"), sdk);
await call("contacts.get (email)", R('["contacts"]["get"]'), () => resend.contacts.get({ email: `jane@${ctx.domain}` }), sdk);
await call("contacts.list", R('["contacts"]["list"]'), () => resend.contacts.list({ limit: 10 }), sdk);
await call("contacts.update", R('["contacts"]["update"]'), () =>
  resend.contacts.update({ id: contact?.id ?? "none", firstName: "Janet", unsubscribed: true }), sdk);
await call("contacts.remove", R('["contacts"]["remove"]'), () => resend.contacts.remove(contact?.id ?? "none"), sdk);

const hook = await call("webhooks.create", R('["webhooks"]["create"]'), () =>
  resend.webhooks.create({ endpoint: "http://127.0.0.1:9/hook", events: ["email.received", "suppression.added"] }), sdk);
await call("webhooks.get", R('["webhooks"]["get"]'), () => resend.webhooks.get(hook?.id ?? "none"), sdk);
await call("webhooks.list", R('["webhooks"]["list"]'), () => resend.webhooks.list({ limit: 10 }), sdk);
await call("webhooks.update", R('["webhooks"]["update"]'), () =>
  resend.webhooks.update(hook?.id ?? "none", { endpoint: "http://127.0.0.1:9/other", events: ["email.sent"], status: "disabled" }), sdk);
await call("webhooks.rotateSigningSecret", R('["webhooks"]["rotateSigningSecret"]'), () =>
  resend.webhooks.rotateSigningSecret(hook?.id ?? "none"), sdk);
await call("webhooks.events.list", R('["webhooks"]["events"]["list"]'), () =>
  resend.webhooks.events.list({ webhookId: hook?.id ?? "none", limit: 5 }), sdk);
await call("webhooks.remove", R('["webhooks"]["remove"]'), () => resend.webhooks.remove(hook?.id ?? "none"), sdk);

const suppressed = await call("suppressions.add", R('["suppressions"]["add"]'), () =>
  resend.suppressions.add({ email: `gone@${ctx.domain}` }), sdk);
await call("suppressions.batch.add", R('["suppressions"]["batch"]["add"]'), () =>
  resend.suppressions.batch.add({ emails: [`one@${ctx.domain}`, `two@${ctx.domain}`, `three@${ctx.domain}`] }), sdk);
await call("suppressions.list", R('["suppressions"]["list"]'), () => resend.suppressions.list({ limit: 10 }), sdk);
await call("suppressions.list (origin)", R('["suppressions"]["list"]'), () =>
  resend.suppressions.list({ limit: 2, origin: "manual" }), sdk);
await call("suppressions.get", R('["suppressions"]["get"]'), () => resend.suppressions.get(suppressed?.id ?? "none"), sdk);
await call("suppressions.get (email)", R('["suppressions"]["get"]'), () => resend.suppressions.get(`gone@${ctx.domain}`), sdk);
await call("suppressions.remove", R('["suppressions"]["remove"]'), () => resend.suppressions.remove(suppressed?.id ?? "none"), sdk);
await call("suppressions.remove (email)", R('["suppressions"]["remove"]'), () => resend.suppressions.remove(`one@${ctx.domain}`), sdk);
await call("suppressions.batch.remove", R('["suppressions"]["batch"]["remove"]'), () =>
  resend.suppressions.batch.remove({ emails: [`two@${ctx.domain}`] }), sdk);
await call("suppressions.batch.remove (ids)", R('["suppressions"]["batch"]["remove"]'), async () => {
  const left = await resend.suppressions.get(`three@${ctx.domain}`);
  return resend.suppressions.batch.remove({ ids: [left.data?.id ?? "none"] });
}, sdk);

print();
