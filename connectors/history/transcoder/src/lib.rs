//! Avro event bodies to ClickHouse Native blocks, for the history sink.
//!
//! ClickHouse's Avro reader cost more CPU than the rest of the sink's INSERT; its Native format is
//! what it reads fastest (columns laid out as it keeps them in memory). This module reads each
//! event's Avro body with the plan Python derived from the record type's schema
//! (`connectors/history/ingest.py`) and appends its fields to its record type's block, which has
//! that type's columns of the shared ingest table only: ClickHouse gives the others their defaults.
//!
//! Every body is read twice: once to check it whole (bounds, varints, union and enum indexes,
//! UTF-8, no bytes left over), then to copy it. A body that fails the check adds nothing, and its
//! index is returned so that Python decides about it with fastavro, as for any event this plan
//! does not cover (unknown framing header, writer not learned yet).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};
use std::collections::HashMap;
use std::sync::Mutex;

/// How one Avro field is read.
enum Op {
    Str,
    Int,
    Long,
    Float,
    Double,
    Bool,
    Enum(Vec<Vec<u8>>),
    /// A union of null and one type; `null_index` is the null branch's position (0 or 1).
    Optional {
        null_index: i64,
        inner: Box<Op>,
    },
    Array(Box<Op>),
    Map(Box<Op>),
}

/// One column of the Native block being built, in ClickHouse's own layout.
enum Col {
    /// String: each row's length (unsigned LEB128) and bytes.
    Str(Vec<u8>),
    /// Fixed-width values, little-endian.
    Fixed { width: usize, data: Vec<u8> },
    /// The null map (1 = null) and the values, a default behind each null.
    Nullable { nulls: Vec<u8>, inner: Box<Col> },
    /// Each row's end offset into the items (UInt64), then the items.
    Array { offsets: Vec<u8>, items: u64, inner: Box<Col> },
    /// Native Map: offsets as for an array of (key, value) tuples, then all keys, then all values.
    Map { offsets: Vec<u8>, items: u64, keys: Vec<u8>, values: Box<Col> },
}

type Failed = &'static str;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn long(&mut self) -> Result<i64, Failed> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err("varint longer than 10 bytes")
    }

    fn int(&mut self) -> Result<i32, Failed> {
        i32::try_from(self.long()?).map_err(|_| "int out of range")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Failed> {
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        let out = self.buf.get(self.pos..end).ok_or("truncated")?;
        self.pos = end;
        Ok(out)
    }

    fn length(&mut self) -> Result<usize, Failed> {
        usize::try_from(self.long()?).map_err(|_| "negative length")
    }

    fn string(&mut self) -> Result<&'a [u8], Failed> {
        let n = self.length()?;
        self.take(n)
    }

    /// The next block's item count of an array or map; 0 ends it. A negative count is followed
    /// by the block's size in bytes, which is not needed here.
    fn block(&mut self) -> Result<usize, Failed> {
        let count = self.long()?;
        if count < 0 {
            self.long()?;
        }
        usize::try_from(count.unsigned_abs()).map_err(|_| "block too large")
    }
}

/// Unsigned LEB128, as Native writes lengths and counts.
fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n > 0x7f {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Read one value of `op`, checking it whole; nothing is written.
fn check(op: &Op, r: &mut Reader) -> Result<(), Failed> {
    match op {
        Op::Str => {
            std::str::from_utf8(r.string()?).map_err(|_| "string is not UTF-8")?;
        }
        Op::Int => {
            r.int()?;
        }
        Op::Long => {
            r.long()?;
        }
        Op::Float => {
            r.take(4)?;
        }
        Op::Double => {
            r.take(8)?;
        }
        Op::Bool => {
            if r.take(1)?[0] > 1 {
                return Err("boolean byte is neither 0 nor 1");
            }
        }
        Op::Enum(symbols) => {
            let i = r.long()?;
            if i < 0 || i as usize >= symbols.len() {
                return Err("enum index out of range");
            }
        }
        Op::Optional { null_index, inner } => {
            let branch = r.long()?;
            if branch != *null_index {
                if branch != 1 - null_index {
                    return Err("union branch out of range");
                }
                check(inner, r)?;
            }
        }
        Op::Array(inner) => loop {
            let count = r.block()?;
            if count == 0 {
                break;
            }
            for _ in 0..count {
                check(inner, r)?;
            }
        },
        Op::Map(inner) => loop {
            let count = r.block()?;
            if count == 0 {
                break;
            }
            for _ in 0..count {
                std::str::from_utf8(r.string()?).map_err(|_| "map key is not UTF-8")?;
                check(inner, r)?;
            }
        },
    }
    Ok(())
}

/// Read one value of `op` (already checked) into `col`.
fn copy(op: &Op, r: &mut Reader, col: &mut Col) -> Result<(), Failed> {
    if let Col::Nullable { nulls, inner } = col {
        if let Op::Optional { null_index, inner: op } = op {
            if r.long()? == *null_index {
                nulls.push(1);
                inner.push_default();
                return Ok(());
            }
            nulls.push(0);
            return copy(op, r, inner);
        }
        nulls.push(0); // a field that is never null, in a column another record type makes Nullable
        return copy(op, r, inner);
    }
    match (op, col) {
        (Op::Str, Col::Str(out)) => put_string(out, r.string()?),
        (Op::Enum(symbols), Col::Str(out)) => put_string(out, &symbols[r.long()? as usize]),
        (Op::Int, Col::Fixed { data, .. }) => data.extend_from_slice(&r.int()?.to_le_bytes()),
        (Op::Long, Col::Fixed { data, .. }) => data.extend_from_slice(&r.long()?.to_le_bytes()),
        (Op::Float, Col::Fixed { data, .. }) => data.extend_from_slice(r.take(4)?),
        (Op::Double, Col::Fixed { data, .. }) => data.extend_from_slice(r.take(8)?),
        (Op::Bool, Col::Fixed { data, .. }) => data.push(r.take(1)?[0]),
        (Op::Array(op), Col::Array { offsets, items, inner }) => {
            loop {
                let count = r.block()?;
                if count == 0 {
                    break;
                }
                for _ in 0..count {
                    copy(op, r, inner)?;
                }
                *items += count as u64;
            }
            offsets.extend_from_slice(&items.to_le_bytes());
        }
        (Op::Map(op), Col::Map { offsets, items, keys, values }) => {
            loop {
                let count = r.block()?;
                if count == 0 {
                    break;
                }
                for _ in 0..count {
                    put_string(keys, r.string()?);
                    copy(op, r, values)?;
                }
                *items += count as u64;
            }
            offsets.extend_from_slice(&items.to_le_bytes());
        }
        _ => return Err("field and column types differ"), // ruled out when the plan is built
    }
    Ok(())
}

impl Col {
    /// An empty column of ClickHouse type `ch`, and the type name its Native block carries.
    fn parse(ch: &str) -> Result<(Col, String), String> {
        let inner = |prefix: &str| ch.strip_prefix(prefix).and_then(|rest| rest.strip_suffix(')'));
        if ch == "String" || ch == "LowCardinality(String)" {
            // the INSERT converts to LowCardinality, as it does when ClickHouse reads Avro
            return Ok((Col::Str(Vec::new()), "String".into()));
        }
        let width = match ch {
            "Bool" | "UInt8" | "Int8" => Some(1),
            "Int32" | "UInt32" | "Float32" => Some(4),
            "Int64" | "UInt64" | "Float64" => Some(8),
            _ => None,
        };
        if let Some(width) = width {
            return Ok((Col::Fixed { width, data: Vec::new() }, ch.into()));
        }
        if let Some(n) = inner("FixedString(") {
            let width = n.parse().map_err(|_| format!("bad FixedString size in {ch}"))?;
            return Ok((Col::Fixed { width, data: Vec::new() }, ch.into()));
        }
        if let Some(t) = inner("Nullable(") {
            let (col, name) = Col::parse(t)?;
            return Ok((Col::Nullable { nulls: Vec::new(), inner: Box::new(col) }, format!("Nullable({name})")));
        }
        if let Some(t) = inner("Array(") {
            let (col, name) = Col::parse(t)?;
            return Ok((Col::Array { offsets: Vec::new(), items: 0, inner: Box::new(col) }, format!("Array({name})")));
        }
        if let Some(t) = inner("Map(String, ") {
            let (col, name) = Col::parse(t)?;
            let map = Col::Map { offsets: Vec::new(), items: 0, keys: Vec::new(), values: Box::new(col) };
            return Ok((map, format!("Map(String, {name})")));
        }
        Err(format!("column type {ch} is not supported by the transcoder"))
    }

    fn push_default(&mut self) {
        match self {
            Col::Str(out) => out.push(0),
            Col::Fixed { width, data } => data.resize(data.len() + *width, 0),
            Col::Nullable { nulls, inner } => {
                nulls.push(1);
                inner.push_default();
            }
            Col::Array { offsets, items, .. } | Col::Map { offsets, items, .. } => {
                offsets.extend_from_slice(&items.to_le_bytes())
            }
        }
    }

    /// The column's data as Native lays it out, in pieces.
    fn each_part(&self, put: &mut impl FnMut(&[u8])) {
        match self {
            Col::Str(data) | Col::Fixed { data, .. } => put(data),
            Col::Nullable { nulls, inner } => {
                put(nulls);
                inner.each_part(put);
            }
            Col::Array { offsets, inner, .. } => {
                put(offsets);
                inner.each_part(put);
            }
            Col::Map { offsets, keys, values, .. } => {
                put(offsets);
                put(keys);
                values.each_part(put);
            }
        }
    }

    fn size(&self) -> usize {
        let mut n = 0;
        self.each_part(&mut |part| n += part.len());
        n
    }

    /// Empty the column, keeping its buffers' capacity.
    fn clear(&mut self) {
        match self {
            Col::Str(data) | Col::Fixed { data, .. } => data.clear(),
            Col::Nullable { nulls, inner } => {
                nulls.clear();
                inner.clear();
            }
            Col::Array { offsets, items, inner } => {
                offsets.clear();
                *items = 0;
                inner.clear();
            }
            Col::Map { offsets, items, keys, values } => {
                offsets.clear();
                *items = 0;
                keys.clear();
                values.clear();
            }
        }
    }

    /// Whether a field read with `op` fits this column (Nullable columns take plain fields too).
    fn fits(&self, op: &Op) -> bool {
        match (self, op) {
            (Col::Nullable { inner, .. }, Op::Optional { inner: op, .. }) => inner.fits(op),
            (_, Op::Optional { .. }) => false,
            (Col::Nullable { inner, .. }, op) => inner.fits(op),
            (Col::Str(_), Op::Str | Op::Enum(_)) => true,
            (Col::Fixed { width: 4, .. }, Op::Int | Op::Float) => true,
            (Col::Fixed { width: 8, .. }, Op::Long | Op::Double) => true,
            (Col::Fixed { width: 1, .. }, Op::Bool) => true,
            (Col::Array { inner, .. }, Op::Array(op)) => inner.fits(op),
            (Col::Map { values, .. }, Op::Map(op)) => values.fits(op),
            _ => false,
        }
    }
}

fn parse_op(spec: &Bound<'_, PyAny>) -> PyResult<Op> {
    if let Ok(kind) = spec.extract::<String>() {
        return Ok(match kind.as_str() {
            "string" => Op::Str,
            "int" => Op::Int,
            "long" => Op::Long,
            "float" => Op::Float,
            "double" => Op::Double,
            "boolean" => Op::Bool,
            other => return Err(PyValueError::new_err(format!("unknown Avro type {other:?} in the plan"))),
        });
    }
    let (kind, arg): (String, Bound<'_, PyAny>) = spec.extract()?;
    Ok(match kind.as_str() {
        "enum" => Op::Enum(arg.extract::<Vec<String>>()?.into_iter().map(String::into_bytes).collect()),
        "array" => Op::Array(Box::new(parse_op(&arg)?)),
        "map" => Op::Map(Box::new(parse_op(&arg)?)),
        "null_first" | "null_second" => {
            let null_index = if kind == "null_first" { 0 } else { 1 };
            Op::Optional { null_index, inner: Box::new(parse_op(&arg)?) }
        }
        other => return Err(PyValueError::new_err(format!("unknown Avro type {other:?} in the plan"))),
    })
}

/// One record type's plan: its short name, and its columns in the ingest table, each filled by
/// one Avro field in field order.
struct RecordPlan {
    event_type: Vec<u8>,
    names: Vec<String>,
    types: Vec<String>, // as the Native block names them
    templates: Vec<Col>,
    ops: Vec<Op>,
}

/// What the check made of one event.
enum Verdict {
    Taken {
        plan: usize,
        header: usize,
    },
    /// Framed with a header of this length that no plan has learned.
    Unknown(usize),
    /// Not framed as an AIOS event, or a body that does not read whole as its plan says.
    Refused,
}

/// A field's plan as Python gives it: column name, ClickHouse type, Avro op.
type FieldSpec<'py> = (String, String, Bound<'py, PyAny>);

type Transcoded<'py> = (Bound<'py, PyBytes>, usize, Vec<usize>, Vec<(Vec<u8>, usize)>);

/// An event that passed the check, waiting to be copied into its record type's block.
struct Checked<'py> {
    plan: usize,
    value: Bound<'py, PyBytes>,
    header: usize,
    topic: Bound<'py, PyString>,
    partition: u32,
    offset: u64,
}

/// Turns a batch of framed Avro events into Native blocks of the ingest table, one per record type.
///
/// A block carries only its record type's columns; ClickHouse fills the ingest table's other
/// columns with their defaults, as it does for a record type's Avro container.
#[pyclass(module = "aios_transcoder")]
struct Transcoder {
    meta: [String; 4], // the column names of the record type, topic, partition and offset
    records: Vec<RecordPlan>,
    headers: HashMap<Vec<u8>, usize>, // framing header (magic and fingerprint or schema id) → record plan
    blocks: Mutex<Vec<Vec<Col>>>,     // each record plan's columns, reused by every call
}

#[pymethods]
impl Transcoder {
    /// `meta`: the column names that take each event's record type (String), topic (String),
    /// partition (UInt32) and offset (UInt64). `records`: per record type, (short name, [(column name, ClickHouse type, Avro plan)] in
    /// field order).
    #[new]
    fn new(meta: [String; 4], records: Vec<(String, Vec<FieldSpec<'_>>)>) -> PyResult<Self> {
        let mut plans = Vec::new();
        for (event_type, fields) in records {
            let mut plan = RecordPlan {
                event_type: event_type.into_bytes(),
                names: Vec::new(),
                types: Vec::new(),
                templates: Vec::new(),
                ops: Vec::new(),
            };
            for (name, ch, spec) in fields {
                let op = parse_op(&spec)?;
                let (col, native) = Col::parse(&ch).map_err(PyValueError::new_err)?;
                if !col.fits(&op) || meta.contains(&name) || plan.names.contains(&name) {
                    return Err(PyValueError::new_err(format!(
                        "field {name} of {} cannot fill a column {ch} (or is named twice)",
                        String::from_utf8_lossy(&plan.event_type)
                    )));
                }
                plan.names.push(name);
                plan.types.push(native);
                plan.templates.push(col);
                plan.ops.push(op);
            }
            plans.push(plan);
        }
        Ok(Transcoder { meta, records: plans, headers: HashMap::new(), blocks: Mutex::new(Vec::new()) })
    }

    /// Events whose framing starts with `header` are read with record plan `record`.
    fn learn(&mut self, header: Vec<u8>, record: usize) -> PyResult<()> {
        if record >= self.records.len() {
            return Err(PyValueError::new_err(format!("no record plan {record}")));
        }
        self.headers.insert(header, record);
        Ok(())
    }

    /// Native blocks of the `records` (objects with topic, partition, offset and value) this
    /// transcoder can read, how many it took, the indexes of those it left out, and the framing
    /// headers it has not learned (each once, with the index of its first event).
    fn transcode<'py>(&self, py: Python<'py>, records: &Bound<'py, PyList>) -> PyResult<Transcoded<'py>> {
        let mut checked = Vec::with_capacity(records.len());
        let mut left = Vec::new();
        let mut unknown: Vec<(Vec<u8>, usize)> = Vec::new();
        let (topic_attr, partition_attr) = (pyo3::intern!(py, "topic"), pyo3::intern!(py, "partition"));
        let (offset_attr, value_attr) = (pyo3::intern!(py, "offset"), pyo3::intern!(py, "value"));
        for (index, record) in records.iter().enumerate() {
            let Ok(value) = record.getattr(value_attr)?.downcast_into::<PyBytes>() else {
                left.push(index);
                continue;
            };
            match self.check(value.as_bytes()) {
                Verdict::Taken { plan, header } => checked.push(Checked {
                    plan,
                    value,
                    header,
                    topic: record.getattr(topic_attr)?.downcast_into::<PyString>()?,
                    partition: record.getattr(partition_attr)?.extract()?,
                    offset: record.getattr(offset_attr)?.extract()?,
                }),
                Verdict::Unknown(header) => {
                    let header = &value.as_bytes()[..header];
                    if !unknown.iter().any(|(seen, _)| seen.as_slice() == header) {
                        unknown.push((header.to_vec(), index));
                    }
                    left.push(index);
                }
                Verdict::Refused => left.push(index),
            }
        }
        // The columns keep their capacity from batch to batch: growing them was a tenth of the time.
        let mut blocks = self.blocks.lock().map_err(|_| PyValueError::new_err("transcoder poisoned"))?;
        if blocks.is_empty() {
            *blocks = self.records.iter().map(|plan| self.columns(plan)).collect();
        }
        blocks.iter_mut().flatten().for_each(Col::clear);
        let mut rows = vec![0usize; self.records.len()];
        for event in &checked {
            let plan = &self.records[event.plan];
            let cols = &mut blocks[event.plan];
            let mut r = Reader { buf: &event.value.as_bytes()[event.header..], pos: 0 };
            for (op, col) in plan.ops.iter().zip(cols.iter_mut()) {
                copy(op, &mut r, col).map_err(PyValueError::new_err)?;
            }
            let meta = &mut cols[plan.ops.len()..];
            meta[0].put_string(&plan.event_type);
            meta[1].put_string(event.topic.to_str()?.as_bytes());
            meta[2].put_fixed(&event.partition.to_le_bytes());
            meta[3].put_fixed(&event.offset.to_le_bytes());
            rows[event.plan] += 1;
        }
        let parts: Vec<(&RecordPlan, &Vec<Col>, usize)> = self
            .records
            .iter()
            .zip(blocks.iter())
            .zip(rows)
            .filter(|(_, n)| *n > 0)
            .map(|((p, c), n)| (p, c, n))
            .collect();
        let mut heads: Vec<Vec<Vec<u8>>> =
            parts.iter().map(|(plan, cols, n)| self.heads(plan, cols.len(), *n)).collect();
        let size: usize = parts
            .iter()
            .zip(&heads)
            .map(|((_, cols, _), h)| h.iter().map(Vec::len).sum::<usize>() + cols.iter().map(Col::size).sum::<usize>())
            .sum();
        let out = PyBytes::new_with(py, size, |buf| {
            let mut at = 0;
            for ((_, cols, _), heads) in parts.iter().zip(heads.iter_mut()) {
                // block head, then each column's name and type followed by its data
                let mut put = |bytes: &[u8]| {
                    buf[at..at + bytes.len()].copy_from_slice(bytes);
                    at += bytes.len();
                };
                put(&heads[0]);
                for (head, col) in heads[1..].iter().zip(cols.iter()) {
                    put(head);
                    col.each_part(&mut put);
                }
            }
            Ok(())
        })?;
        Ok((out, checked.len(), left, unknown))
    }
}

impl Transcoder {
    /// The record plan and header length of `data` when it is framed with a learned header and
    /// its body reads whole and exactly.
    fn check(&self, data: &[u8]) -> Verdict {
        let header = match data.first() {
            Some(0xc3) if data.len() >= 10 && data[1] == 0x01 => 10,
            Some(0x00) if data.len() >= 5 => 5,
            _ => return Verdict::Refused,
        };
        let Some(&plan) = self.headers.get(&data[..header]) else {
            return Verdict::Unknown(header);
        };
        let body = &data[header..];
        let mut r = Reader { buf: body, pos: 0 };
        let whole = self.records[plan].ops.iter().try_for_each(|op| check(op, &mut r));
        if whole.is_ok() && r.pos == body.len() {
            Verdict::Taken { plan, header }
        } else {
            Verdict::Refused
        }
    }

    /// Empty columns for `plan`'s fields, then the meta columns.
    fn columns(&self, plan: &RecordPlan) -> Vec<Col> {
        let mut cols: Vec<Col> = plan.templates.iter().map(Col::empty_like).collect();
        cols.push(Col::Str(Vec::new()));
        cols.push(Col::Str(Vec::new()));
        cols.push(Col::Fixed { width: 4, data: Vec::new() });
        cols.push(Col::Fixed { width: 8, data: Vec::new() });
        cols
    }

    /// A block's count line, then each column's name and type, as Native writes them.
    fn heads(&self, plan: &RecordPlan, columns: usize, rows: usize) -> Vec<Vec<u8>> {
        let meta_types = ["String", "String", "UInt32", "UInt64"];
        let names = plan.names.iter().map(String::as_str).chain(self.meta.iter().map(String::as_str));
        let types = plan.types.iter().map(String::as_str).chain(meta_types);
        let mut counts = Vec::new();
        put_varint(&mut counts, columns as u64);
        put_varint(&mut counts, rows as u64);
        let mut heads = vec![counts];
        for (name, native) in names.zip(types) {
            let mut head = Vec::new();
            put_string(&mut head, name.as_bytes());
            put_string(&mut head, native.as_bytes());
            heads.push(head);
        }
        heads
    }
}

impl Col {
    fn empty_like(&self) -> Col {
        match self {
            Col::Str(_) => Col::Str(Vec::new()),
            Col::Fixed { width, .. } => Col::Fixed { width: *width, data: Vec::new() },
            Col::Nullable { inner, .. } => Col::Nullable { nulls: Vec::new(), inner: Box::new(inner.empty_like()) },
            Col::Array { inner, .. } => {
                Col::Array { offsets: Vec::new(), items: 0, inner: Box::new(inner.empty_like()) }
            }
            Col::Map { values, .. } => {
                Col::Map { offsets: Vec::new(), items: 0, keys: Vec::new(), values: Box::new(values.empty_like()) }
            }
        }
    }

    // The meta columns are made by Transcoder::columns with exactly these kinds.
    fn put_string(&mut self, s: &[u8]) {
        if let Col::Str(out) = self {
            put_string(out, s);
        }
    }

    fn put_fixed(&mut self, bytes: &[u8]) {
        if let Col::Fixed { data, .. } = self {
            data.extend_from_slice(bytes);
        }
    }
}

#[pymodule]
fn aios_transcoder(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Transcoder>()?;
    Ok(())
}
