// Inbound's `@inboundemail/sdk` (4.x), unchanged, pointed at the server by its base URL (the
// constructor's second argument, `{server}/api/v2`). Context comes as JSON in argv[2].
import { Inbound } from "@inboundemail/sdk";
import { call, print } from "./capture.mjs";

const ctx = JSON.parse(process.argv[2]);
const client = new Inbound(process.env.INBOUND_API_KEY, `${process.env.INBOUND_BASE_URL}/api/v2`);
const sdk = (answer) => ({ data: answer.data, error: answer.error });
const S = (path) => `Data<Inbound${path}>`;

await call("email.received.reply", S('["email"]["received"]["reply"]'), () =>
  client.email.received.reply({
    emailId: ctx.received,
    to: "customer@example.net",
    subject: "Re: Where is my order?",
    textBody: "It ships tomorrow.",
    htmlBody: "<p>It ships tomorrow.</p>",
  }), sdk);
await call("email.sent.reply", S('["email"]["sent"]["reply"]'), () =>
  client.email.sent.reply(ctx.received, { from: `Acme Support <support@${ctx.domain}>`, text: "It ships tomorrow." }), sdk);

print();
