// The `ollama` npm package streaming one chat from a ggufd server.
//
// Usage: node chat.mjs <host> <model>
//
// Prints one JSON line per streamed part, then a line {"type": "summary", ...} with the
// text, the last part, the models `list()` gave and the server's `version()`. Exits with
// status 1 (the summary carrying the error) when the client threw.

import { Ollama } from 'ollama';

const [host, model] = process.argv.slice(2);
if (!host || !model) {
  console.error('usage: node chat.mjs <host> <model>');
  process.exit(2);
}

const client = new Ollama({ host });
const summary = { type: 'summary', text: '', parts: 0, last: null, models: [], version: null, error: null };
try {
  const stream = await client.chat({
    model,
    messages: [{ role: 'user', content: 'Say hi.' }],
    stream: true,
    options: { temperature: 0, num_predict: 8 },
  });
  for await (const part of stream) {
    console.log(JSON.stringify(part));
    summary.parts += 1;
    summary.text += part.message?.content ?? '';
    summary.last = part;
  }
  summary.models = (await client.list()).models.map((m) => m.name);
  summary.version = (await client.version()).version;
} catch (e) {
  summary.error = { name: e?.name, message: String(e?.message ?? e) };
}
console.log(JSON.stringify(summary));
process.exit(summary.error ? 1 : 0);
