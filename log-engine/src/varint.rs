//! Variable-length integers: unsigned LEB128 and zigzag-encoded signed values, as in
//! Kafka's record format.

/// The most bytes a 64-bit varint occupies.
pub const VARINT_LEN_MAX: usize = 10;

/// Appends `value` as unsigned LEB128.
#[inline]
pub fn put_u64(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends `value` zigzag-encoded.
#[inline]
pub fn put_i64(out: &mut Vec<u8>, value: i64) {
    put_u64(out, ((value << 1) ^ (value >> 63)) as u64);
}

/// The encoded length of `value` as unsigned LEB128.
#[inline]
pub fn len_u64(value: u64) -> usize {
    // One byte per 7 bits up to the highest set bit, at position `p`: p / 7 + 1,
    // which (p * 9 + 73) / 64 equals for every p in 0..=63, without a division.
    let highest = 63 - (value | 1).leading_zeros() as usize;
    (highest * 9 + 73) / 64
}

/// The encoded length of `value` zigzag-encoded.
#[inline]
pub fn len_i64(value: i64) -> usize {
    len_u64(((value << 1) ^ (value >> 63)) as u64)
}

/// Reads an unsigned LEB128 value from the front of `buf`, returning it and the bytes
/// it took; `None` when `buf` ends early or the value overflows 64 bits.
#[inline(always)]
pub fn get_u64(buf: &[u8]) -> Option<(u64, usize)> {
    // Most lengths and deltas fit one byte.
    if let Some(&byte) = buf.first()
        && byte < 0x80
    {
        return Some((u64::from(byte), 1));
    }
    let mut value = 0u64;
    for (i, byte) in buf.iter().take(VARINT_LEN_MAX).enumerate() {
        let low = u64::from(byte & 0x7f);
        if i == VARINT_LEN_MAX - 1 && low > 1 {
            return None;
        }
        value |= low << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Reads a zigzag-encoded signed value from the front of `buf`.
#[inline(always)]
pub fn get_i64(buf: &[u8]) -> Option<(i64, usize)> {
    let (raw, used) = get_u64(buf)?;
    Some((((raw >> 1) as i64) ^ -((raw & 1) as i64), used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lengths_are_right_on_each_side_of_every_power_of_two() {
        for shift in 0..64 {
            for value in [(1u64 << shift) - 1, 1u64 << shift, (1u64 << shift) + 1] {
                let mut buf = Vec::new();
                put_u64(&mut buf, value);
                assert_eq!(len_u64(value), buf.len(), "{value}");
            }
        }
        assert_eq!(len_u64(u64::MAX), VARINT_LEN_MAX);
    }

    proptest! {
        #[test]
        fn unsigned_round_trips(value: u64) {
            let mut buf = Vec::new();
            put_u64(&mut buf, value);
            prop_assert_eq!(buf.len(), len_u64(value));
            prop_assert_eq!(get_u64(&buf), Some((value, buf.len())));
        }

        #[test]
        fn signed_round_trips(value: i64) {
            let mut buf = Vec::new();
            put_i64(&mut buf, value);
            prop_assert_eq!(buf.len(), len_i64(value));
            prop_assert_eq!(get_i64(&buf), Some((value, buf.len())));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes: Vec<u8>) {
            let _ = get_u64(&bytes);
            let _ = get_i64(&bytes);
        }
    }

    #[test]
    fn truncated_and_overlong_inputs_are_rejected() {
        assert_eq!(get_u64(&[0x80]), None);
        assert_eq!(get_u64(&[]), None);
        assert_eq!(get_u64(&[0xff; 11]), None);
        assert_eq!(
            get_u64(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
        assert_eq!(
            get_u64(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Some((u64::MAX, 10))
        );
    }
}
