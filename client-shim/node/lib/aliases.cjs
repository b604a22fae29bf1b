'use strict';
// Other spellings the encoder accepts for a field when the field's own name
// is absent (the field's own name always wins). tools/gen-fields.mjs reads
// this file and writes the lookups into the generated encoder.
//
// - camelCase names, as in the original in-process plan (startTime, endTime,
//   duration, error, user, ...);
// - `referer`, the HTTP header's spelling of referrer;
// - token counts from an OpenAI-style `usage` object (Chat Completions or
//   Responses API names) when the counts are not given directly.

const ALIASES = {
  user_id: ['userId', 'user'],
  start_time: ['startTime'],
  end_time: ['endTime'],
  duration_ms: ['durationMs', 'duration'],
  error_message: ['errorMessage', 'error'],
  prompt_tokens: ['promptTokens'],
  completion_tokens: ['completionTokens'],
  cached_tokens: ['cachedTokens'],
  referrer: ['referer'],
};
for (const k of Object.keys(ALIASES)) Object.freeze(ALIASES[k]);
Object.freeze(ALIASES);

function usagePrompt(u) {
  const v = u.prompt_tokens;
  return v != null ? v : u.input_tokens != null ? u.input_tokens : u.promptTokens;
}

function usageCompletion(u) {
  const v = u.completion_tokens;
  return v != null ? v : u.output_tokens != null ? u.output_tokens : u.completionTokens;
}

function usageCached(u) {
  const d = u.prompt_tokens_details != null ? u.prompt_tokens_details : u.input_tokens_details;
  if (d != null && typeof d === 'object' && d.cached_tokens != null) return d.cached_tokens;
  return u.cached_tokens != null ? u.cached_tokens : u.cachedTokens;
}

// field name -> name of the function above that reads it from `usage`
const USAGE = {
  prompt_tokens: 'usagePrompt',
  completion_tokens: 'usageCompletion',
  cached_tokens: 'usageCached',
};

// Fields cut to a number of characters by the client before encoding:
// field name -> the encoder argument holding the limit.
const CUTS = {
  prompt: 'promptChars',
  error_message: 'errorChars',
};

module.exports = { ALIASES, USAGE, CUTS, usagePrompt, usageCompletion, usageCached };
