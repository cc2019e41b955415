//! OpenAI-compatible chat completions and embeddings: request bodies and
//! response parsing, without transport.

use serde::{Deserialize, Serialize};

use crate::cloud::config::{CloudWorkerConfig, OpenAiApi, ScoreFrom};
use crate::Answer;

/// How requests to one OpenAI-compatible model are written and read.
#[derive(Debug, Clone)]
pub struct OpenAiCodec {
    /// Which API.
    pub api: OpenAiApi,
    model: String,
    system: Option<String>,
    max_tokens: u32,
    score_from: ScoreFrom,
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<Message<'a>>,
    max_tokens: u32,
    temperature: f32,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct EmbeddingsRequest<'a> {
    model: &'a str,
    input: &'a [String],
}

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ReplyMessage,
}

#[derive(Deserialize)]
struct ReplyMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<Embedding>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Embedding {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f64>,
}

#[derive(Deserialize, Default)]
struct Usage {
    #[serde(default)]
    total_tokens: u64,
}

/// What a response said.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// One answer per input, in input order: score and outputs (the
    /// worker adds who answered and the label).
    pub replies: Vec<Answer>,
    /// Response id (chat).
    pub id: Option<String>,
    /// The model that answered, when the server says.
    pub model: Option<String>,
    /// Tokens used, from `usage`.
    pub tokens: u64,
}

impl OpenAiCodec {
    /// The codec of an `openai` worker.
    pub fn new(c: &CloudWorkerConfig) -> Self {
        OpenAiCodec {
            api: c.api.unwrap_or_default(),
            model: c.model.clone(),
            system: c.system.clone(),
            max_tokens: c.max_tokens.unwrap_or(16),
            score_from: c.score_from.unwrap_or_default(),
        }
    }

    /// Path below the API root.
    pub fn path(&self) -> &'static str {
        match self.api {
            OpenAiApi::Chat => "/chat/completions",
            OpenAiApi::Embeddings => "/embeddings",
        }
    }

    /// Most inputs per request.
    pub fn max_inputs(&self, configured: usize) -> usize {
        match self.api {
            OpenAiApi::Chat => 1,
            OpenAiApi::Embeddings => configured.max(1),
        }
    }

    /// Tokens a request is expected to use, for the tokens-per-minute limit:
    /// about four characters per token, plus the reply.
    pub fn estimate_tokens(&self, inputs: &[String]) -> u32 {
        let chars: usize = inputs.iter().map(String::len).sum::<usize>() + self.system.as_ref().map_or(0, String::len);
        let reply = if self.api == OpenAiApi::Chat { self.max_tokens } else { 0 };
        (chars / 4 + 1) as u32 + reply
    }

    /// The JSON body for `inputs` (one for chat).
    pub fn encode(&self, inputs: &[String]) -> Vec<u8> {
        match self.api {
            OpenAiApi::Chat => {
                let mut messages = Vec::with_capacity(2);
                if let Some(s) = &self.system {
                    messages.push(Message { role: "system", content: s });
                }
                messages.push(Message { role: "user", content: inputs.first().map_or("", String::as_str) });
                let req = ChatRequest { model: &self.model, messages, max_tokens: self.max_tokens, temperature: 0.0 };
                serde_json::to_vec(&req).expect("request serializes")
            }
            OpenAiApi::Embeddings => serde_json::to_vec(&EmbeddingsRequest { model: &self.model, input: inputs })
                .expect("request serializes"),
        }
    }

    /// Replies from a response body for `n` inputs.
    pub fn decode(&self, body: &[u8], n: usize) -> Result<Parsed, String> {
        match self.api {
            OpenAiApi::Chat => {
                let r: ChatResponse =
                    serde_json::from_slice(body).map_err(|e| format!("response is not a chat completion: {e}"))?;
                let content = r
                    .choices
                    .first()
                    .and_then(|c| c.message.content.clone())
                    .ok_or("chat completion has no message content")?;
                let score = match self.score_from {
                    ScoreFrom::None => None,
                    ScoreFrom::NumberInReply => Some(number_in(&content).ok_or_else(|| {
                        format!("reply has no number in [0, 1] to read a score from ({} chars)", content.len())
                    })?),
                };
                let outputs = serde_json::json!({ "reply": content }).to_string();
                Ok(Parsed {
                    replies: vec![Answer::remote(score, Some(outputs))],
                    id: r.id,
                    model: r.model,
                    tokens: r.usage.unwrap_or_default().total_tokens,
                })
            }
            OpenAiApi::Embeddings => {
                let r: EmbeddingsResponse =
                    serde_json::from_slice(body).map_err(|e| format!("response is not an embeddings response: {e}"))?;
                if r.data.len() != n {
                    return Err(format!("{} embeddings for {n} inputs", r.data.len()));
                }
                let mut slots: Vec<Option<Answer>> = vec![None; n];
                for (pos, e) in r.data.into_iter().enumerate() {
                    let i = e.index.unwrap_or(pos);
                    let slot = slots.get_mut(i).ok_or_else(|| format!("embedding index {i} out of range"))?;
                    *slot =
                        Some(Answer::remote(None, Some(serde_json::json!({ "embedding": e.embedding }).to_string())));
                }
                let replies = slots
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| s.ok_or_else(|| format!("no embedding for input {i}")))
                    .collect::<Result<_, _>>()?;
                Ok(Parsed { replies, id: None, model: r.model, tokens: r.usage.unwrap_or_default().total_tokens })
            }
        }
    }
}

/// The first number in `text` that lies in [0, 1].
fn number_in(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() || (bytes[i] == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            if let Ok(x) = text[start..i].trim_end_matches('.').parse::<f64>() {
                if (0.0..=1.0).contains(&x) {
                    return Some(x);
                }
            }
        } else {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(api: OpenAiApi) -> OpenAiCodec {
        OpenAiCodec {
            api,
            model: "m".into(),
            system: Some("Answer with a probability.".into()),
            max_tokens: 8,
            score_from: ScoreFrom::NumberInReply,
        }
    }

    #[test]
    fn chat_request_and_reply() {
        let c = codec(OpenAiApi::Chat);
        let body: serde_json::Value = serde_json::from_slice(&c.encode(&["Risk of 12 EUR?".into()])).unwrap();
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["content"], "Risk of 12 EUR?");
        assert_eq!(body["max_tokens"], 8);
        let resp = br#"{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,
            "message":{"role":"assistant","content":"Risk: 0.82."},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13}}"#;
        let p = c.decode(resp, 1).unwrap();
        assert_eq!(p.replies[0].score, Some(0.82));
        assert_eq!(p.tokens, 13);
        assert_eq!(p.id.as_deref(), Some("chatcmpl-1"));
        let no_number = br#"{"choices":[{"message":{"content":"I cannot say, 42 maybe"}}]}"#;
        assert!(c.decode(no_number, 1).unwrap_err().contains("no number"));
    }

    #[test]
    fn embeddings_are_put_back_in_input_order() {
        let c = codec(OpenAiApi::Embeddings);
        assert_eq!(c.max_inputs(32), 32);
        assert_eq!(codec(OpenAiApi::Chat).max_inputs(32), 1);
        let resp = br#"{"object":"list","data":[{"index":1,"embedding":[0.5]},{"index":0,"embedding":[0.25]}],
            "model":"e","usage":{"prompt_tokens":4,"total_tokens":4}}"#;
        let p = c.decode(resp, 2).unwrap();
        assert_eq!(p.replies[0].outputs.as_deref(), Some(r#"{"embedding":[0.25]}"#));
        assert_eq!(p.replies[1].outputs.as_deref(), Some(r#"{"embedding":[0.5]}"#));
        assert!(c.decode(resp, 3).unwrap_err().contains("2 embeddings for 3 inputs"));
    }

    #[test]
    fn numbers_in_replies() {
        assert_eq!(number_in("0.7"), Some(0.7));
        assert_eq!(number_in("score=1"), Some(1.0));
        assert_eq!(number_in("between 3 and .25"), Some(0.25));
        assert_eq!(number_in("none"), None);
    }
}
