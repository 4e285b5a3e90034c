//! Reading tabular data (CSV with a header row) into model inputs, with errors that name the
//! file, column and row at fault.
//!
//! Conventions: an empty cell is a missing value (`NaN` in the matrix, which tree models route
//! by their default direction); any other cell must parse as a finite number — the text `inf`
//! or `NaN` is rejected, so a missing value is always explicit.

use std::path::Path;

use crate::{AiError, Matrix};

/// A CSV table held as text, column names from the header row.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    source: String,
}

impl Table {
    /// Reads a CSV file with a header row.
    pub fn read_csv(path: impl AsRef<Path>) -> Result<Self, AiError> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|source| AiError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_reader(file, &path.display().to_string())
    }

    /// Reads CSV text from any reader; `source` names it in errors.
    pub fn from_reader(reader: impl std::io::Read, source: &str) -> Result<Self, AiError> {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(reader);
        let bad = |row: usize, reason: String| AiError::InvalidValue {
            column: String::new(),
            row,
            value: source.to_string(),
            reason,
        };
        let headers: Vec<String> = rdr
            .headers()
            .map_err(|e| bad(0, format!("cannot read the header row: {e}")))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        if headers.is_empty() || headers.iter().all(String::is_empty) {
            return Err(bad(0, "the file has no header row".into()));
        }
        let mut rows = Vec::new();
        for (i, rec) in rdr.records().enumerate() {
            let rec = rec.map_err(|e| bad(i, format!("malformed CSV record: {e}")))?;
            rows.push(rec.iter().map(str::to_string).collect());
        }
        Ok(Table {
            headers,
            rows,
            source: source.to_string(),
        })
    }

    /// Column names.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no data rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Index of column `name`, or an error listing the columns that exist.
    pub fn index_of(&self, name: &str) -> Result<usize, AiError> {
        self.headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| AiError::MissingColumn {
                name: name.to_string(),
                available: self.headers.join(", "),
            })
    }

    /// The text of column `name`, one entry per row.
    pub fn column(&self, name: &str) -> Result<Vec<&str>, AiError> {
        let j = self.index_of(name)?;
        Ok(self
            .rows
            .iter()
            .map(|r| r.get(j).map_or("", String::as_str))
            .collect())
    }

    /// The named columns as a numeric matrix, in the given order.
    pub fn matrix(&self, columns: &[String]) -> Result<Matrix, AiError> {
        let idx = columns
            .iter()
            .map(|c| self.index_of(c))
            .collect::<Result<Vec<_>, _>>()?;
        let mut data = Vec::with_capacity(self.rows.len() * idx.len());
        for (i, row) in self.rows.iter().enumerate() {
            for (&j, name) in idx.iter().zip(columns) {
                let cell = row.get(j).map_or("", |s| s.trim());
                data.push(parse_cell(cell, name, i)?);
            }
        }
        Matrix::new(data, self.rows.len(), idx.len())
    }

    /// Where the table came from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Parses one numeric cell: empty = missing (`NaN`), otherwise a finite number.
pub fn parse_cell(cell: &str, column: &str, row: usize) -> Result<f64, AiError> {
    if cell.is_empty() {
        return Ok(f64::NAN);
    }
    let v: f64 = cell.parse().map_err(|_| AiError::InvalidValue {
        column: column.to_string(),
        row,
        value: cell.to_string(),
        reason: "not a number".into(),
    })?;
    if !v.is_finite() {
        return Err(AiError::NonFinite {
            column: column.to_string(),
            row,
            value: v,
        });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Table {
        Table::from_reader(s.as_bytes(), "test.csv").unwrap()
    }

    #[test]
    fn reads_columns_in_requested_order() {
        let tb = t("a,b,c\n1,2,3\n4,,6\n");
        let m = tb.matrix(&["c".into(), "a".into(), "b".into()]).unwrap();
        assert_eq!(m.row(0), &[3.0, 1.0, 2.0]);
        assert_eq!(m.row(1)[..2], [6.0, 4.0]);
        assert!(m.row(1)[2].is_nan(), "empty cell is missing");
    }

    #[test]
    fn errors_name_the_culprit() {
        let tb = t("a,b\n1,2\n3,inf\n5,x\n");
        match tb.matrix(&["a".into(), "zz".into()]) {
            Err(AiError::MissingColumn { name, available }) => {
                assert_eq!(name, "zz");
                assert_eq!(available, "a, b");
            }
            other => panic!("{other:?}"),
        }
        match tb.matrix(&["b".into()]) {
            Err(AiError::NonFinite { column, row, .. }) => {
                assert_eq!((column.as_str(), row), ("b", 1))
            }
            other => panic!("{other:?}"),
        }
        let tb = t("a,b\n5,x\n");
        let e = tb.matrix(&["b".into()]).unwrap_err();
        assert!(e.to_string().contains("\"x\"") && e.to_string().contains("row 0"));
    }

    #[test]
    fn ragged_rows_are_malformed() {
        assert!(Table::from_reader("a,b\n1,2,3\n".as_bytes(), "r.csv").is_err());
    }
}
