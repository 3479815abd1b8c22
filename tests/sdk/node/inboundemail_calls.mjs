// Inbound's `inboundemail` SDK (0.20), unchanged, pointed at the server by INBOUND_BASE_URL:
// the e2 methods that map onto what the server has. Context comes as JSON in argv[2].
import Inbound from "inboundemail";
import { call, print } from "./capture.mjs";

const ctx = JSON.parse(process.argv[2]);
const client = new Inbound();
const plain = (answer) => ({ data: answer, error: null });
const I = (path) => `Awaited<ReturnType<Inbound${path}>>`;

await call("emails.retrieve (received)", I('["emails"]["retrieve"]'), () => client.emails.retrieve(ctx.received), plain);
const reply = await call("emails.reply", I('["emails"]["reply"]'), () =>
  client.emails.reply(ctx.received, { from: `Acme Support <support@${ctx.domain}>`, text: "It ships tomorrow." }), plain);
await call("emails.reply (every option)", I('["emails"]["reply"]'), () =>
  client.emails.reply(ctx.received, {
    from: `support@${ctx.domain}`,
    to: ["customer@example.net"],
    subject: "About your order",
    html: "<p>It ships <b>tomorrow</b>.</p>",
    text: "It ships tomorrow.",
    headers: { "X-Ticket": "42" },
    attachments: [{ filename: "label.txt", content: Buffer.from("label").toString("base64"), content_type: "text/plain" }],
    reply_all: true,
    tags: [{ name: "kind", value: "support" }],
  }), plain);

await call("emails.retrieve (sent)", I('["emails"]["retrieve"]'), () => client.emails.retrieve(reply?.id ?? "none"), plain);

print();
