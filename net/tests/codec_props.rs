//! Property tests of the control-message codec: any sequence of fields written is read back
//! unchanged, and any truncation of it is an error, never a panic.

use net::{Reader, Writer};
use proptest::prelude::*;

#[derive(Clone, Debug, PartialEq)]
enum Field {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    Bytes(Vec<u8>),
    Raw(Vec<u8>),
    Str(String),
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        any::<u8>().prop_map(Field::U8),
        any::<u16>().prop_map(Field::U16),
        any::<u32>().prop_map(Field::U32),
        any::<u64>().prop_map(Field::U64),
        proptest::collection::vec(any::<u8>(), 0..100).prop_map(Field::Bytes),
        proptest::collection::vec(any::<u8>(), 0..100).prop_map(Field::Raw),
        ".{0,40}".prop_map(Field::Str),
    ]
}

fn encode(fields: &[Field]) -> Vec<u8> {
    let mut w = Writer::new();
    for f in fields {
        match f {
            Field::U8(v) => w.u8(*v),
            Field::U16(v) => w.u16(*v),
            Field::U32(v) => w.u32(*v),
            Field::U64(v) => w.u64(*v),
            Field::Bytes(v) => w.bytes(v),
            Field::Raw(v) => w.raw(v),
            Field::Str(v) => w.str(v),
        };
    }
    w.finish()
}

/// Reads `fields`' shapes back from `buf`.
fn decode(buf: &[u8], fields: &[Field]) -> Result<Vec<Field>, net::DecodeError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    for f in fields {
        out.push(match f {
            Field::U8(_) => Field::U8(r.u8()?),
            Field::U16(_) => Field::U16(r.u16()?),
            Field::U32(_) => Field::U32(r.u32()?),
            Field::U64(_) => Field::U64(r.u64()?),
            Field::Bytes(_) => Field::Bytes(r.bytes()?.to_vec()),
            Field::Raw(v) => Field::Raw(r.raw(v.len())?.to_vec()),
            Field::Str(_) => Field::Str(r.str()?.to_owned()),
        });
    }
    r.end()?;
    Ok(out)
}

proptest! {
    #[test]
    fn fields_round_trip(fields in proptest::collection::vec(field(), 0..20)) {
        let buf = encode(&fields);
        prop_assert_eq!(decode(&buf, &fields).unwrap(), fields);
    }

    #[test]
    fn truncated_or_extended_input_is_an_error(
        fields in proptest::collection::vec(field(), 1..10),
        cut in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 1..8),
    ) {
        let buf = encode(&fields);
        if !buf.is_empty() {
            let at = cut.index(buf.len());
            prop_assert!(decode(&buf[..at], &fields).is_err());
        }
        let mut longer = buf.clone();
        longer.extend_from_slice(&extra);
        prop_assert!(decode(&longer, &fields).is_err());
    }
}
