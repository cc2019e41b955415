//! Request templates of `openai` workers: literal text and `{field}`
//! placeholders, parsed once (checked by the manifest, bound by the
//! redactor).

/// A parsed request template: literal text and `{field}` placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub(crate) parts: Vec<Part>,
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Part {
    /// Literal text.
    Text(String),
    /// A `{field}` placeholder.
    Field(String),
}

impl Template {
    /// Parses `{field}` placeholders; `{{` and `}}` are literal braces.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '}')) => break,
                            Some((_, ch)) => name.push(ch),
                            None => return Err(format!("`{{` at byte {at} is not closed; write `{{{{` for a brace")),
                        }
                    }
                    let name = name.trim().to_string();
                    if name.is_empty() || name.contains('{') {
                        return Err(format!("placeholder at byte {at} names no field"));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Field(name));
                }
                '}' => return Err(format!("`}}` at byte {at} closes nothing; write `}}}}` for a brace")),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Template { parts })
    }

    /// The field names the template reads, in order of appearance.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(f) => Some(f.as_str()),
            Part::Text(_) => None,
        })
    }
}
