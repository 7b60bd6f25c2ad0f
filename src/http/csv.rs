//! CSV exports of the listings (`?format=csv` or `Accept: text/csv`): a
//! header row, then one row per item, fields quoted as RFC 4180 says (a
//! field holding a comma, a double quote, CR or LF is put in double quotes,
//! its double quotes doubled), lines ended by CRLF. The columns are the
//! JSON fields of the same item, in the same order, from the same values
//! (so the two cannot drift); a missing value is an empty field. What a
//! withdrawal carried comes after the columns that predate it, an object
//! flattened into one column per field named by its path (`fee.currency`,
//! `fee.amount`, `destination.kind`, `destination.value`,
//! `destination.network`), its metadata as one column holding the JSON
//! object (`{}` when none): so a partly paid withdrawal's `paid` is on
//! its row, and readers that pick columns by name see the old ones where
//! they were. An entry's columns leave out its `part` (its rows keep
//! (`seq`, `part`) order) and end with its operation's metadata. The page's `next` cursor goes in the
//! `Next-Cursor` header (absent on the last page).
//!
//! Free text a caller wrote (a withdrawal's `reason`, its destination's
//! fields) could be run by a spreadsheet: text that starts with `=`, `+`,
//! `-`, `@`, a tab or a CR gets a leading `'` ([`spreadsheet_safe`],
//! OWASP's advice against CSV injection); metadata's column starts with
//! `{`. Amounts, ids and times are the engine's own text and never start
//! so, except a negative amount, which must stay a number.

use std::borrow::Cow;

use actix_web::http::header::{self, HeaderValue};
use actix_web::HttpResponse;

use crate::http::details::MetadataJson;
use crate::http::json::{EntryJson, WithdrawalJson};

/// The header that carries a CSV page's `next` cursor.
pub const NEXT_CURSOR_HEADER: &str = "Next-Cursor";

/// The content type of every CSV answer.
pub const CSV_CONTENT_TYPE: &str = "text/csv; charset=utf-8";

/// An item that is one CSV row.
pub trait CsvRow {
    /// The column names, as the JSON names the fields.
    const HEADER: &'static [&'static str];
    /// The row's fields, one per column, unquoted.
    fn fields(&self) -> Vec<Cow<'_, str>>;
}

/// The CSV answer for one page: header, rows, and `next` in its header.
pub fn answer<T: CsvRow>(items: &[T], next: Option<&str>) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response.insert_header((header::CONTENT_TYPE, CSV_CONTENT_TYPE));
    // A cursor is lowercase hex behind a letter, always a valid header value.
    if let Some(value) = next.and_then(|n| HeaderValue::from_str(n).ok()) {
        response.insert_header((NEXT_CURSOR_HEADER, value));
    }
    response.body(document(items))
}

/// The whole CSV text of `items`.
pub fn document<T: CsvRow>(items: &[T]) -> String {
    let mut out = String::new();
    line(&mut out, T::HEADER.iter().map(|h| Cow::Borrowed(*h)));
    for item in items {
        line(&mut out, item.fields().into_iter());
    }
    out
}

fn line<'a>(out: &mut String, fields: impl Iterator<Item = Cow<'a, str>>) {
    for (i, value) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&quoted(&value));
    }
    out.push_str("\r\n");
}

/// One field as RFC 4180 writes it.
pub fn quoted(value: &str) -> Cow<'_, str> {
    if value.contains([',', '"', '\r', '\n']) {
        Cow::Owned(format!("\"{}\"", value.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(value)
    }
}

fn text(value: &Option<String>) -> Cow<'_, str> {
    Cow::Borrowed(value.as_deref().unwrap_or(""))
}

/// Metadata as one field: its JSON object, `{}` when none.
fn metadata_text(metadata: Option<&MetadataJson>) -> Cow<'static, str> {
    let text = metadata.and_then(|m| serde_json::to_string(&m.0).ok());
    Cow::Owned(text.unwrap_or_else(|| "{}".into()))
}

/// Text a caller wrote, or an empty field ([`spreadsheet_safe`]).
fn caller_text(value: Option<&String>) -> Cow<'_, str> {
    spreadsheet_safe(value.map_or("", String::as_str))
}

/// Caller-written text as a spreadsheet will show it, never run it: a
/// leading `'` before a first character that would start a formula.
pub fn spreadsheet_safe(value: &str) -> Cow<'_, str> {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{value}"))
    } else {
        Cow::Borrowed(value)
    }
}

impl CsvRow for WithdrawalJson {
    const HEADER: &'static [&'static str] = &[
        "transaction_id",
        "account",
        "currency",
        "amount",
        "status",
        "payout_id",
        "reason",
        "created_at",
        "updated_at",
        "paid",
        "fee.currency",
        "fee.amount",
        "destination.kind",
        "destination.value",
        "destination.network",
        "metadata",
        "expires_at",
    ];

    fn fields(&self) -> Vec<Cow<'_, str>> {
        let fee = self.fee.as_ref();
        let destination = self.destination.as_ref();
        vec![
            Cow::Borrowed(&self.transaction_id),
            Cow::Owned(self.account.to_string()),
            Cow::Borrowed(&self.currency),
            Cow::Borrowed(&self.amount),
            Cow::Borrowed(self.status),
            Cow::Owned(self.payout_id.map(|p| p.to_string()).unwrap_or_default()),
            caller_text(self.reason.as_ref()),
            text(&self.created_at),
            text(&self.updated_at),
            text(&self.paid),
            Cow::Borrowed(fee.map_or("", |f| &f.currency)),
            Cow::Borrowed(fee.map_or("", |f| &f.amount)),
            caller_text(destination.map(|d| &d.kind)),
            caller_text(destination.map(|d| &d.value)),
            caller_text(destination.and_then(|d| d.network.as_ref())),
            metadata_text(Some(&self.metadata)),
            text(&self.expires_at),
        ]
    }
}

/// The columns predate `part` and are kept as they were (a spreadsheet
/// keeps the rows' order, which is (`seq`, `part`) order).
impl CsvRow for EntryJson {
    const HEADER: &'static [&'static str] = &[
        "transaction_id",
        "account",
        "currency",
        "seq",
        "kind",
        "amount",
        "available_after",
        "locked_after",
        "at",
        "metadata",
    ];

    fn fields(&self) -> Vec<Cow<'_, str>> {
        vec![
            Cow::Borrowed(&self.transaction_id),
            Cow::Owned(self.account.to_string()),
            Cow::Borrowed(&self.currency),
            Cow::Owned(self.seq.to_string()),
            Cow::Borrowed(self.kind),
            Cow::Borrowed(&self.amount),
            Cow::Borrowed(&self.available_after),
            Cow::Borrowed(&self.locked_after),
            text(&self.at),
            metadata_text(self.metadata.as_ref()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn withdrawal(reason: Option<&str>) -> WithdrawalJson {
        WithdrawalJson {
            transaction_id: "0000000000000001000000000000000a".into(),
            account: 1,
            currency: "USD".into(),
            amount: "12.50".into(),
            status: "failed",
            payout_id: None,
            reason: reason.map(str::to_string),
            created_at: Some("2026-01-01T00:00:00.000Z".into()),
            updated_at: None,
            paid: None,
            fee: None,
            destination: None,
            metadata: Default::default(),
            expires_at: None,
        }
    }

    #[test]
    fn fields_are_quoted_only_when_rfc_4180_needs_it() {
        assert_eq!(quoted("plain text"), "plain text");
        assert_eq!(quoted(""), "");
        assert_eq!(quoted("a,b"), "\"a,b\"");
        assert_eq!(quoted("say \"no\""), "\"say \"\"no\"\"\"");
        assert_eq!(quoted("two\nlines"), "\"two\nlines\"");
        assert_eq!(quoted("cr\r"), "\"cr\r\"");
    }

    #[test]
    fn a_reason_that_would_start_a_formula_is_shown_as_text() {
        for reason in [
            "=HYPERLINK(\"http://x\")",
            "+1",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ] {
            let row = withdrawal(Some(reason));
            let fields = row.fields();
            assert_eq!(fields[6], format!("'{reason}"), "{reason:?}");
        }
        let plain = withdrawal(Some("bank said no"));
        assert_eq!(plain.fields()[6], "bank said no");
        let text = document(&[withdrawal(Some("=1+1"))]);
        assert!(text.contains(",'=1+1,"), "{text}");
    }

    #[test]
    fn a_page_is_a_header_then_one_row_per_item() {
        let rows = [
            withdrawal(None),
            withdrawal(Some("bank said \"no\", twice\r\nsee log")),
        ];
        let text = document(&rows);
        assert_eq!(
            text,
            "transaction_id,account,currency,amount,status,payout_id,reason,created_at,updated_at,\
             paid,fee.currency,fee.amount,destination.kind,destination.value,destination.network,metadata,expires_at\r\n\
             0000000000000001000000000000000a,1,USD,12.50,failed,,,2026-01-01T00:00:00.000Z,,,,,,,,{},\r\n\
             0000000000000001000000000000000a,1,USD,12.50,failed,,\"bank said \"\"no\"\", twice\r\nsee log\",2026-01-01T00:00:00.000Z,,,,,,,,{},\r\n"
        );
        assert_eq!(
            document::<WithdrawalJson>(&[]),
            format!("{}\r\n", WithdrawalJson::HEADER.join(","))
        );
    }

    /// `json`'s fields as CSV columns name them: an object's fields by
    /// their path, metadata (an object of any keys) whole, as JSON text.
    fn flattened(json: &serde_json::Value) -> Vec<(String, String)> {
        let mut columns = Vec::new();
        for (key, value) in json.as_object().unwrap() {
            match value {
                serde_json::Value::Object(fields) if key != "metadata" => {
                    for (field, value) in fields {
                        columns.push((format!("{key}.{field}"), plain(value)));
                    }
                }
                other => columns.push((key.clone(), plain(other))),
            }
        }
        columns
    }

    fn plain(value: &serde_json::Value) -> String {
        match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    #[test]
    fn the_columns_are_the_json_fields() {
        let mut full = withdrawal(Some("r"));
        full.payout_id = Some(3);
        full.updated_at = Some("2026-01-01T00:00:01.000Z".into());
        full.paid = Some("12.00".into());
        full.fee = Some(crate::http::details::FeeJson {
            currency: "EUR".into(),
            amount: "0.50".into(),
        });
        full.destination = Some(crate::http::details::DestinationJson {
            kind: "iban".into(),
            value: "=DE89, 3704".into(),
            network: Some("sepa".into()),
        });
        full.metadata.0.insert("order".into(), "7, \"x\"".into());
        full.expires_at = Some("2026-01-02T00:00:00.000Z".into());
        let json = serde_json::to_value(&full).unwrap();
        let mut columns = flattened(&json);
        columns.sort();
        let mut header = WithdrawalJson::HEADER.to_vec();
        header.sort_unstable();
        let names: Vec<&str> = columns.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, header, "every JSON field has its column");
        let row: Vec<String> = full.fields().into_iter().map(|f| f.into_owned()).collect();
        for (name, value) in columns {
            let at = WithdrawalJson::HEADER
                .iter()
                .position(|h| *h == name)
                .unwrap();
            // Caller text that would start a formula is shown as text.
            let shown = spreadsheet_safe(&value).into_owned();
            assert_eq!(row[at], shown, "{name}");
        }
        let text = document(&[full]);
        assert!(text.contains(",\"'=DE89, 3704\","), "{text}");
    }

    #[test]
    fn every_row_has_one_field_per_column() {
        assert_eq!(
            withdrawal(None).fields().len(),
            WithdrawalJson::HEADER.len()
        );
        let entry = EntryJson {
            transaction_id: "t".into(),
            account: 2,
            currency: "USD".into(),
            seq: 3,
            part: 0,
            kind: "lock",
            amount: "1.00".into(),
            available_after: "0.00".into(),
            locked_after: "1.00".into(),
            at: None,
            metadata: None,
        };
        assert_eq!(entry.fields().len(), EntryJson::HEADER.len());
    }
}
