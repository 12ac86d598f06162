//! Label and field selectors as kube-apiserver parses them (apimachinery's `labels` and
//! `fields` parsers): the same grammar, the same matching, and the same error words, so a
//! selector the real server refuses is refused here too.

use std::collections::BTreeSet;

/// One parsed label requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    DoesNotExist(String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Greater(String, i64),
    Less(String, i64),
}

/// A parsed label selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    End,
    Identifier(String),
    Open,
    Close,
    Comma,
    Not,
    NotEquals,
    Equals,
    DoubleEquals,
    Greater,
    Less,
    In,
    NotIn,
}

impl Token {
    /// The text an error message quotes.
    fn literal(&self) -> String {
        match self {
            Self::End => String::new(),
            Self::Identifier(s) => s.clone(),
            Self::Open => "(".into(),
            Self::Close => ")".into(),
            Self::Comma => ",".into(),
            Self::Not => "!".into(),
            Self::NotEquals => "!=".into(),
            Self::Equals => "=".into(),
            Self::DoubleEquals => "==".into(),
            Self::Greater => ">".into(),
            Self::Less => "<".into(),
            Self::In => "in".into(),
            Self::NotIn => "notin".into(),
        }
    }
}

fn special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

/// Splits the selector into tokens; `in`/`notin` stay identifiers (the parser decides).
fn lex(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if special(c) {
            let mut op = String::new();
            while let Some(&c) = chars.peek() {
                let candidate = format!("{op}{c}");
                if ["!", "!=", "(", ")", ",", "=", "==", ">", "<"].contains(&candidate.as_str()) {
                    op = candidate;
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(match op.as_str() {
                "!" => Token::Not,
                "!=" => Token::NotEquals,
                "(" => Token::Open,
                ")" => Token::Close,
                "," => Token::Comma,
                "=" => Token::Equals,
                "==" => Token::DoubleEquals,
                ">" => Token::Greater,
                _ => Token::Less,
            });
            continue;
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || special(c) {
                break;
            }
            word.push(c);
            chars.next();
        }
        tokens.push(Token::Identifier(word));
    }
    tokens.push(Token::End);
    tokens
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        self.at += 1;
        t
    }

    /// The next token read as an operator (`in` and `notin` are keywords here).
    fn next_operator(&mut self) -> Token {
        match self.next() {
            Token::Identifier(w) if w == "in" => Token::In,
            Token::Identifier(w) if w == "notin" => Token::NotIn,
            t => t,
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let mut negated = false;
        let mut t = self.next();
        if t == Token::Not {
            negated = true;
            t = self.next();
        }
        let Token::Identifier(key) = t else {
            return Err(format!("found '{}', expected: identifier", t.literal()));
        };
        // `!key` is whole by itself (what follows is the caller's to refuse).
        if negated {
            return Ok(Requirement::DoesNotExist(key));
        }
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Ok(Requirement::Exists(key));
        }
        let op = self.next_operator();
        match op {
            Token::In | Token::NotIn => {
                let values = self.values()?;
                Ok(if op == Token::In {
                    Requirement::In(key, values)
                } else {
                    Requirement::NotIn(key, values)
                })
            }
            Token::Equals | Token::DoubleEquals | Token::NotEquals => {
                let value = self.exact_value()?;
                let set = BTreeSet::from([value]);
                Ok(if op == Token::NotEquals {
                    Requirement::NotIn(key, set)
                } else {
                    Requirement::In(key, set)
                })
            }
            Token::Greater | Token::Less => {
                let value = self.exact_value()?;
                let n = value.parse::<i64>().map_err(|_| {
                    format!("for 'Gt', 'Lt' operators, the value must be an integer: {value}")
                })?;
                Ok(if op == Token::Greater {
                    Requirement::Greater(key, n)
                } else {
                    Requirement::Less(key, n)
                })
            }
            other => Err(format!(
                "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                other.literal()
            )),
        }
    }

    fn values(&mut self) -> Result<BTreeSet<String>, String> {
        let t = self.next();
        if t != Token::Open {
            return Err(format!("found '{}' expected: '('", t.literal()));
        }
        match self.peek().clone() {
            Token::Identifier(_) | Token::Comma => {
                let set = self.identifiers()?;
                let t = self.next();
                if t != Token::Close {
                    return Err(format!("found '{}', expected: ')'", t.literal()));
                }
                Ok(set)
            }
            Token::Close => {
                self.next();
                Ok(BTreeSet::from([String::new()]))
            }
            t => Err(format!(
                "found '{}', expected: ',', ')' or identifier",
                t.literal()
            )),
        }
    }

    fn identifiers(&mut self) -> Result<BTreeSet<String>, String> {
        let mut set = BTreeSet::new();
        loop {
            match self.next() {
                Token::Identifier(v) => {
                    set.insert(v);
                    match self.peek() {
                        Token::Comma => {}
                        Token::Close => return Ok(set),
                        t => return Err(format!("found '{}', expected: ',' or ')'", t.literal())),
                    }
                }
                Token::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    match self.peek() {
                        Token::Close => {
                            set.insert(String::new());
                            return Ok(set);
                        }
                        Token::Comma => {
                            self.next();
                            set.insert(String::new());
                        }
                        _ => {}
                    }
                }
                t => {
                    return Err(format!(
                        "found '{}', expected: ',', or identifier",
                        t.literal()
                    ));
                }
            }
        }
    }

    fn exact_value(&mut self) -> Result<String, String> {
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Ok(String::new());
        }
        match self.next() {
            Token::Identifier(v) => Ok(v),
            t => Err(format!("found '{}', expected: identifier", t.literal())),
        }
    }
}

impl LabelSelector {
    /// Parses a label selector; the error is kube-apiserver's message.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut p = Parser {
            tokens: lex(text),
            at: 0,
        };
        let mut requirements = Vec::new();
        loop {
            match p.peek().clone() {
                Token::Identifier(_) | Token::Not => {
                    let r = p
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(r);
                    match p.next() {
                        Token::End => return Ok(Self(requirements)),
                        Token::Comma => {
                            if !matches!(p.peek(), Token::Identifier(_) | Token::Not) {
                                return Err(format!(
                                    "found '{}', expected: identifier after ','",
                                    p.peek().literal()
                                ));
                            }
                        }
                        t => {
                            return Err(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                t.literal()
                            ));
                        }
                    }
                }
                Token::End => return Ok(Self(requirements)),
                t => {
                    return Err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        t.literal()
                    ));
                }
            }
        }
    }

    /// Whether labels (read through `get`) satisfy every requirement.
    pub fn matches(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
            Requirement::In(k, set) => get(k).is_some_and(|v| set.contains(&v)),
            Requirement::NotIn(k, set) => get(k).is_none_or(|v| !set.contains(&v)),
            Requirement::Greater(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Requirement::Less(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        })
    }
}

/// A parsed field selector: `field=value`, `field==value`, `field!=value`, comma-separated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses a field selector whose fields must be among `supported` (the resource's field
    /// labels); errors are kube-apiserver's words.
    pub fn parse(text: &str, supported: &[&str]) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in text.split(',').filter(|t| !t.is_empty()) {
            let split = ["!=", "==", "="]
                .iter()
                .filter_map(|op| term.find(op).map(|at| (at, *op)))
                .min_by_key(|(at, op)| (*at, std::cmp::Reverse(op.len())));
            let Some((at, op)) = split else {
                return Err(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                ));
            };
            let (field, value) = (&term[..at], &term[at + op.len()..]);
            if !supported.contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_owned(), op != "!=", value.to_owned()));
        }
        Ok(Self(terms))
    }

    /// Whether the object's fields (read through `get`) satisfy every term.
    pub fn matches(&self, get: &dyn Fn(&str) -> String) -> bool {
        self.0
            .iter()
            .all(|(field, equal, value)| (get(field) == *value) == *equal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn label_selectors_parse_and_match_as_kube_does() {
        let pod = labels(&[("k8s-app", "fluentd-node"), ("tier", "2")]);
        for (selector, expected) in [
            ("k8s-app=fluentd-node", true),
            ("k8s-app==fluentd-node", true),
            ("k8s-app!=fluentd-node", false),
            ("k8s-app in (a, fluentd-node)", true),
            ("k8s-app notin (fluentd-node)", false),
            ("k8s-app, !missing", true),
            ("missing", false),
            ("tier>1", true),
            ("tier<2", false),
            ("", true),
        ] {
            let s = LabelSelector::parse(selector).unwrap();
            assert_eq!(s.matches(&pod), expected, "{selector}");
        }
    }

    #[test]
    fn bad_label_selectors_get_kube_apiserver_s_words() {
        // Recorded from kube-apiserver v1.32 (pods-list-bad-label-selector).
        assert_eq!(
            LabelSelector::parse("k8s-app in (a b").unwrap_err(),
            "unable to parse requirement: found 'b', expected: ',' or ')'"
        );
        assert_eq!(
            LabelSelector::parse("a=b,").unwrap_err(),
            "found '', expected: identifier after ','"
        );
        assert!(
            LabelSelector::parse("a in b")
                .unwrap_err()
                .contains("expected: '('")
        );
    }

    #[test]
    fn field_selectors_refuse_unknown_fields_and_match() {
        let fields = ["spec.nodeName", "status.phase"];
        // Recorded from kube-apiserver v1.32 (pods-list-unsupported-field).
        assert_eq!(
            FieldSelector::parse("spec.foo=bar", &fields).unwrap_err(),
            "field label not supported: spec.foo"
        );
        assert!(
            FieldSelector::parse("spec.nodeName", &fields)
                .unwrap_err()
                .contains("can't understand")
        );
        let s = FieldSelector::parse("spec.nodeName=node-1,status.phase!=Failed", &fields).unwrap();
        let get = |f: &str| match f {
            "spec.nodeName" => "node-1".to_owned(),
            _ => "Running".to_owned(),
        };
        assert!(s.matches(&get));
    }
}
