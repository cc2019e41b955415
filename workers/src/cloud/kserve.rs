//! The KServe V2 / Open Inference Protocol over REST: request bodies and
//! response parsing, without transport.

use serde::{Deserialize, Serialize};
use serde_json::Value as J;

use crate::cloud::config::{CloudWorkerConfig, TensorType};

/// How requests to one KServe V2 model are written and answers read.
#[derive(Debug, Clone)]
pub struct KserveCodec {
    model: String,
    version: Option<String>,
    input_name: String,
    datatype: TensorType,
    output: Option<String>,
    score_index: usize,
}

/// `POST .../infer` body.
#[derive(Debug, Serialize)]
struct InferRequest<'a> {
    id: &'a str,
    inputs: [Tensor<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    outputs: Option<[RequestedOutput<'a>; 1]>,
}

#[derive(Debug, Serialize)]
struct Tensor<'a> {
    name: &'a str,
    shape: [usize; 2],
    datatype: &'static str,
    data: TensorData<'a>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum TensorData<'a> {
    F32(&'a [f32]),
    F64(Vec<f64>),
}

#[derive(Debug, Serialize)]
struct RequestedOutput<'a> {
    name: &'a str,
}

/// The parts of an inference response that are read.
#[derive(Debug, Deserialize)]
struct InferResponse {
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    id: Option<String>,
    outputs: Vec<OutputTensor>,
}

#[derive(Debug, Deserialize)]
struct OutputTensor {
    name: String,
    shape: Vec<i64>,
    data: J,
}

/// What a response said.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    /// One score per row.
    pub scores: Vec<f64>,
    /// The version that answered, when the server says.
    pub model_version: Option<String>,
    /// The response's `id`.
    pub id: Option<String>,
}

impl KserveCodec {
    /// The codec of a `kserve_v2` worker.
    pub fn new(c: &CloudWorkerConfig) -> Self {
        KserveCodec {
            model: c.model.clone(),
            version: c.version.clone(),
            input_name: c.input_name.clone().unwrap_or_else(|| "input".into()),
            datatype: c.datatype.unwrap_or_default(),
            output: c.output.clone(),
            score_index: c.score_index.unwrap_or(1),
        }
    }

    /// Path of the model: `/v2/models/{model}[/versions/{version}]`.
    pub fn model_path(&self) -> String {
        match &self.version {
            Some(v) => format!("/v2/models/{}/versions/{}", self.model, v),
            None => format!("/v2/models/{}", self.model),
        }
    }

    /// Path of the infer call.
    pub fn infer_path(&self) -> String {
        format!("{}/infer", self.model_path())
    }

    /// The JSON body for `rows` rows of `width` features, row-major.
    pub fn encode(&self, id: &str, features: &[f32], rows: usize, width: usize) -> Vec<u8> {
        let data = match self.datatype {
            TensorType::FP32 => TensorData::F32(features),
            TensorType::FP64 => TensorData::F64(features.iter().map(|&x| f64::from(x)).collect()),
        };
        let req = InferRequest {
            id,
            inputs: [Tensor { name: &self.input_name, shape: [rows, width], datatype: self.datatype.as_str(), data }],
            outputs: self.output.as_deref().map(|name| [RequestedOutput { name }]),
        };
        serde_json::to_vec(&req).expect("request serializes")
    }

    /// The text of a request that is not tensor data (id, names): what the
    /// last PII check reads. Feature values are numbers the pipeline
    /// computed, and digit runs in floats would only give false alarms.
    pub fn envelope_text(&self, id: &str) -> String {
        format!("{id} {} {} {}", self.model, self.input_name, self.output.as_deref().unwrap_or(""))
    }

    /// Scores from a response body for `rows` rows.
    pub fn decode(&self, body: &[u8], rows: usize) -> Result<Answered, String> {
        let resp: InferResponse =
            serde_json::from_slice(body).map_err(|e| format!("response is not a V2 inference response: {e}"))?;
        let out = match &self.output {
            Some(name) => resp
                .outputs
                .iter()
                .find(|o| &o.name == name)
                .ok_or_else(|| format!("response has no output `{name}`"))?,
            None => resp.outputs.first().ok_or("response has no outputs")?,
        };
        let mut flat = Vec::new();
        flatten(&out.data, &mut flat).map_err(|e| format!("output `{}`: {e}", out.name))?;
        let cols = match out.shape.as_slice() {
            [n] if *n as usize == rows => 1,
            [n, c] if *n as usize == rows && *c >= 1 => *c as usize,
            other => {
                return Err(format!("output `{}` has shape {other:?}, expected [{rows}] or [{rows}, k]", out.name))
            }
        };
        if flat.len() != rows * cols {
            return Err(format!("output `{}` has {} values for shape [{rows}, {cols}]", out.name, flat.len()));
        }
        let col = if cols == 1 { 0 } else { self.score_index };
        if col >= cols {
            return Err(format!("score_index {col} is outside the {cols} columns of output `{}`", out.name));
        }
        let scores = (0..rows).map(|r| flat[r * cols + col]).collect();
        Ok(Answered { scores, model_version: resp.model_version, id: resp.id })
    }
}

/// Row-major numbers of a tensor's `data`, flat or nested; booleans as 0/1.
fn flatten(v: &J, out: &mut Vec<f64>) -> Result<(), String> {
    match v {
        J::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
        J::Number(n) => {
            out.push(n.as_f64().ok_or("number out of range")?);
            Ok(())
        }
        J::Bool(b) => {
            out.push(f64::from(u8::from(*b)));
            Ok(())
        }
        other => Err(format!("non-numeric value {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(output: Option<&str>) -> KserveCodec {
        KserveCodec {
            model: "fraud".into(),
            version: Some("v1".into()),
            input_name: "input".into(),
            datatype: TensorType::FP32,
            output: output.map(String::from),
            score_index: 1,
        }
    }

    #[test]
    fn request_has_the_protocol_shape() {
        let c = codec(Some("predict_proba"));
        assert_eq!(c.infer_path(), "/v2/models/fraud/versions/v1/infer");
        let body: J = serde_json::from_slice(&c.encode("r1", &[1.0, 2.0, 3.0, 4.0], 2, 2)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"id": "r1",
                "inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}],
                "outputs": [{"name": "predict_proba"}]})
        );
    }

    #[test]
    fn two_column_probabilities_give_the_positive_column() {
        let c = codec(Some("predict_proba"));
        let body = br#"{"model_name":"fraud","model_version":"v1","id":"r1","outputs":[
            {"name":"predict_proba","shape":[2,2],"datatype":"FP64","data":[0.9,0.1,0.2,0.8]}]}"#;
        let a = c.decode(body, 2).unwrap();
        assert_eq!(a.scores, vec![0.1, 0.8]);
        assert_eq!(a.model_version.as_deref(), Some("v1"));
        // Nested data is accepted too.
        let nested =
            br#"{"outputs":[{"name":"predict_proba","shape":[2,2],"datatype":"FP64","data":[[0.9,0.1],[0.2,0.8]]}]}"#;
        assert_eq!(c.decode(nested, 2).unwrap().scores, vec![0.1, 0.8]);
    }

    #[test]
    fn bad_responses_are_described() {
        let c = codec(Some("predict_proba"));
        let wrong_rows =
            br#"{"outputs":[{"name":"predict_proba","shape":[3,2],"datatype":"FP64","data":[1,2,3,4,5,6]}]}"#;
        assert!(c.decode(wrong_rows, 2).unwrap_err().contains("shape"));
        let other = br#"{"outputs":[{"name":"predict","shape":[2],"datatype":"INT64","data":[0,1]}]}"#;
        assert!(c.decode(other, 2).unwrap_err().contains("no output `predict_proba`"));
        assert!(c.decode(b"<html>", 2).unwrap_err().contains("not a V2"));
        // Without a named output the first is read; 1-D outputs are scores.
        assert_eq!(codec(None).decode(other, 2).unwrap().scores, vec![0.0, 1.0]);
    }
}
