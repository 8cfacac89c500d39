// The Vercel AI SDK (`ai` + `@ai-sdk/openai-compatible`) streaming from a ggufd server.
//
// Usage: node stream.mjs <baseURL> <scenario>
//   plain        streamText without tools
//   required     one zod-typed tool, toolChoice 'required' on the first step, then the
//                tool's result goes back to the model (a tool round trip)
//   named        one jsonSchema-typed tool, toolChoice {type: 'tool', toolName}, then the
//                round trip as above
//
// Prints one JSON line per part of `fullStream` (errors as {name, message}), then a line
// {"type": "summary", ...} with the tool calls, the text, the finish reason, the steps and
// the errors. Exits with status 1 when the stream or the steps reported an error.

import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { jsonSchema, stepCountIs, streamText, tool } from 'ai';
import { z } from 'zod';

const [baseURL, scenario] = process.argv.slice(2);
if (!baseURL || !['plain', 'required', 'named'].includes(scenario)) {
  console.error('usage: node stream.mjs <baseURL> plain|required|named');
  process.exit(2);
}

const provider = createOpenAICompatible({ name: 'ggufd', baseURL, apiKey: 'none', includeUsage: true });

const weather = tool({
  description: 'Get the current weather in a city',
  inputSchema: z.object({
    city: z.string().describe('The name of the city'),
    unit: z.enum(['celsius', 'fahrenheit']).describe('The temperature unit'),
  }),
  execute: async ({ city, unit }) => ({ city, unit, temperature: 21, sky: 'sunny' }),
});

const add = tool({
  description: 'Add two integers',
  inputSchema: jsonSchema({
    type: 'object',
    properties: {
      a: { type: 'integer', description: 'The first addend' },
      b: { type: 'integer', description: 'The second addend' },
    },
    required: ['a', 'b'],
    additionalProperties: false,
  }),
  execute: async ({ a, b }) => ({ sum: a + b }),
});

function settings() {
  const common = { model: provider('local'), maxOutputTokens: 48, temperature: 0, maxRetries: 0 };
  if (scenario === 'plain') {
    return { ...common, prompt: 'Say hello in one short sentence.' };
  }
  const [name, tools, prompt] =
    scenario === 'required'
      ? ['get_weather', { get_weather: weather }, 'What is the weather like in Paris?']
      : ['add', { add }, 'What is 17 plus 25?'];
  const first = scenario === 'required' ? 'required' : { type: 'tool', toolName: name };
  return {
    ...common,
    prompt,
    tools,
    // The first step must call the tool; the second gets its result and must answer.
    stopWhen: stepCountIs(2),
    prepareStep: ({ stepNumber }) => ({ toolChoice: stepNumber === 0 ? first : 'none' }),
  };
}

function serialize(_key, value) {
  if (value instanceof Error) {
    return { name: value.name, message: value.message, ...value };
  }
  return value;
}

const toolCalls = [];
const errors = [];
let text = '';
let finishReason = null;
const result = streamText({ ...settings(), onError: ({ error }) => errors.push(error) });
for await (const part of result.fullStream) {
  console.log(JSON.stringify(part, serialize));
  if (part.type === 'text-delta') text += part.text;
  if (part.type === 'tool-call') {
    toolCalls.push({ toolCallId: part.toolCallId, toolName: part.toolName, input: part.input });
  }
  if (part.type === 'finish') finishReason = part.finishReason;
}
let steps = [];
try {
  steps = (await result.steps).map((s) => ({
    finishReason: s.finishReason,
    text: s.text,
    toolCalls: s.toolCalls.map((c) => ({ toolName: c.toolName, input: c.input })),
    toolResults: s.toolResults.map((r) => ({ toolName: r.toolName, output: r.output })),
  }));
} catch (error) {
  errors.push(error);
}
const summary = { type: 'summary', toolCalls, text, finishReason, steps, errors };
console.log(JSON.stringify(summary, serialize));
process.exitCode = errors.length > 0 ? 1 : 0;
