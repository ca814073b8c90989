//! RTP packetization (H.264 RFC 6184, H.265 RFC 7798, AAC-hbr RFC 3640) on top of `rtp-types`,
//! and a small RTCP writer for sender reports (`rtp-types` has no RTCP). Pure: no IO, no clock.

use rtp_types::RtpPacketBuilder;

use super::clip::{AccessUnit, StreamKind};

/// Largest RTP payload we emit, leaving room for IP/UDP/RTP headers in a 1500-byte MTU.
pub const PAYLOAD_BYTES_MAX: usize = 1400;
/// Largest video payload under `Quirk::HugeFrames`: a whole NAL far above the MTU, still within
/// one interleaved frame (16-bit length) and one UDP datagram.
pub const HUGE_PAYLOAD_BYTES_MAX: usize = 60_000;
/// `Quirk::SeiMarker`: an SEI NAL (user data unregistered, 16-byte UUID, 4 bytes of payload)
/// sent with the marker bit before the first slice of every H.264 access unit.
pub const QUIRK_SEI_NAL: [u8; 24] = [
    0x06, 0x05, 0x14, // SEI, payload type 5 (user data unregistered), size 20
    0xca, 0x4e, 0xec, 0x00, 0x51, 0x01, 0x4b, 0x1d, 0x9a, 0x4f, 0x2d, 0x3e, 0x71, 0x5e, 0x0c, 0xa1, b'q',
    b'u', b'r', b'k', // payload
    0x80, // rbsp trailing bits
];

pub const PAYLOAD_TYPE_VIDEO: u8 = 96;
pub const PAYLOAD_TYPE_AUDIO: u8 = 97;

/// Per-stream sender state: SSRC, next sequence number and counters for sender reports.
#[derive(Debug, Clone)]
pub struct RtpSender {
    pub ssrc: u32,
    pub payload_type: u8,
    pub h265: bool,
    pub next_seq: u16,
    pub packets_sent: u32,
    pub octets_sent: u32,
    /// Largest video payload: NAL units up to this size go in one packet, larger ones in FU
    /// fragments of at most this size.
    pub video_payload_max: usize,
    /// `Quirk::SeiMarker` (H.264 only): an SEI packet with the marker bit inside every access
    /// unit, FU-A continuation packets that carry a different NAL type, and an empty FU-A
    /// fragment after every start fragment.
    pub sei_marker: bool,
}

impl RtpSender {
    pub fn new(ssrc: u32, initial_seq: u16, kind: StreamKind, h265: bool) -> RtpSender {
        let payload_type = match kind {
            StreamKind::Video => PAYLOAD_TYPE_VIDEO,
            StreamKind::Audio => PAYLOAD_TYPE_AUDIO,
        };
        RtpSender {
            ssrc,
            payload_type,
            h265,
            next_seq: initial_seq,
            packets_sent: 0,
            octets_sent: 0,
            video_payload_max: PAYLOAD_BYTES_MAX,
            sei_marker: false,
        }
    }

    /// Packetizes one access unit, calling `emit` with each complete RTP packet.
    pub fn packetize(
        &mut self,
        au: &AccessUnit,
        rtp_ts: u32,
        scratch: &mut Vec<u8>,
        emit: &mut dyn FnMut(&[u8]),
    ) {
        match au.kind {
            StreamKind::Video => {
                let n = au.nals.len();
                let mut sei_sent = !self.sei_marker || self.h265;
                for (i, nal) in au.nals.iter().enumerate() {
                    if !sei_sent && nal.first().is_some_and(|b| (1..=5).contains(&(b & 0x1f))) {
                        self.send(&[&QUIRK_SEI_NAL], true, rtp_ts, scratch, emit);
                        sei_sent = true;
                    }
                    self.packetize_nal(nal, i + 1 == n, rtp_ts, scratch, emit);
                }
            }
            StreamKind::Audio => {
                for frame in &au.nals {
                    self.packetize_aac(frame, rtp_ts, scratch, emit);
                }
            }
        }
    }

    fn packetize_nal(
        &mut self,
        nal: &[u8],
        last_of_au: bool,
        rtp_ts: u32,
        scratch: &mut Vec<u8>,
        emit: &mut dyn FnMut(&[u8]),
    ) {
        if nal.len() <= self.video_payload_max {
            self.send(&[nal], last_of_au, rtp_ts, scratch, emit);
            return;
        }
        // Fragmentation units: H.264 FU-A (type 28, 1-byte header) or H.265 FU (type 49, 2 bytes).
        let (indicator, hdr_len, nal_type): ([u8; 2], usize, u8) = if self.h265 {
            ([(nal[0] & 0x81) | (49 << 1), nal[1]], 2, (nal[0] >> 1) & 0x3f)
        } else {
            ([(nal[0] & 0xe0) | 28, 0], 1, nal[0] & 0x1f)
        };
        let body = &nal[hdr_len..];
        let chunk_max = self.video_payload_max - hdr_len - 1;
        let mut chunks = body.chunks(chunk_max).peekable();
        let mut first = true;
        while let Some(chunk) = chunks.next() {
            let end = chunks.peek().is_none();
            let quirky = self.sei_marker && !self.h265;
            // Tiandy: continuation fragments name another NAL type (5 <-> 1).
            let ty = if quirky && !first { nal_type ^ 0x04 } else { nal_type };
            let fu_header = [ty | if first { 0x80 } else { 0 } | if end { 0x40 } else { 0 }];
            self.send(&[&indicator[..hdr_len], &fu_header, chunk], end && last_of_au, rtp_ts, scratch, emit);
            if quirky && first && !end {
                // An empty middle fragment.
                self.send(&[&indicator[..hdr_len], &[ty ^ 0x04]], false, rtp_ts, scratch, emit);
            }
            first = false;
        }
    }

    /// AAC-hbr: a 16-bit AU-headers-length, one AU header (13-bit size, 3-bit index), then the
    /// frame, fragmented over several packets if needed (each fragment repeats the AU header).
    fn packetize_aac(
        &mut self,
        frame: &[u8],
        rtp_ts: u32,
        scratch: &mut Vec<u8>,
        emit: &mut dyn FnMut(&[u8]),
    ) {
        let au_size = (frame.len().min(0x1fff) as u16) << 3;
        let headers = [0x00, 0x10, (au_size >> 8) as u8, au_size as u8];
        let mut chunks = frame.chunks(PAYLOAD_BYTES_MAX - headers.len()).peekable();
        while let Some(chunk) = chunks.next() {
            let end = chunks.peek().is_none();
            self.send(&[&headers, chunk], end, rtp_ts, scratch, emit);
        }
    }

    fn send(
        &mut self,
        parts: &[&[u8]],
        marker: bool,
        rtp_ts: u32,
        scratch: &mut Vec<u8>,
        emit: &mut dyn FnMut(&[u8]),
    ) {
        let mut builder = RtpPacketBuilder::<&[u8], &[u8]>::new()
            .payload_type(self.payload_type)
            .sequence_number(self.next_seq)
            .timestamp(rtp_ts)
            .ssrc(self.ssrc)
            .marker_bit(marker);
        let mut payload_len = 0;
        for part in parts {
            builder = builder.payload(part);
            payload_len += part.len();
        }
        scratch.clear();
        builder.write_into_vec_unchecked(scratch);
        emit(scratch);
        self.next_seq = self.next_seq.wrapping_add(1);
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(payload_len as u32);
    }

    /// A compound RTCP packet: sender report (RFC 3550 §6.4.1, no report blocks) + SDES CNAME.
    pub fn sender_report(&self, ntp_time: u64, rtp_ts: u32, cname: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        // SR: V=2 P=0 RC=0, PT=200, length = 6 (28 bytes / 4 - 1).
        out.extend_from_slice(&[0x80, 200, 0, 6]);
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&ntp_time.to_be_bytes());
        out.extend_from_slice(&rtp_ts.to_be_bytes());
        out.extend_from_slice(&self.packets_sent.to_be_bytes());
        out.extend_from_slice(&self.octets_sent.to_be_bytes());
        // SDES: V=2 P=0 SC=1, PT=202; one chunk: SSRC, CNAME item, END, pad to 32 bits.
        let cname = &cname.as_bytes()[..cname.len().min(255)];
        let sdes_start = out.len();
        out.extend_from_slice(&[0x81, 202, 0, 0]);
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&[1, cname.len() as u8]);
        out.extend_from_slice(cname);
        out.push(0);
        while (out.len() - sdes_start) % 4 != 0 {
            out.push(0);
        }
        let words = ((out.len() - sdes_start) / 4 - 1) as u16;
        out[sdes_start + 2..sdes_start + 4].copy_from_slice(&words.to_be_bytes());
        out
    }
}

/// Converts a duration since the Unix epoch to a 64-bit NTP timestamp (seconds since 1900 in
/// the upper 32 bits, binary fraction in the lower 32).
pub fn ntp_from_unix(since_epoch: std::time::Duration) -> u64 {
    const UNIX_TO_NTP_SECS: u64 = 2_208_988_800;
    let secs = since_epoch.as_secs() + UNIX_TO_NTP_SECS;
    let frac = (u64::from(since_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtp_types::RtpPacket;

    fn collect(sender: &mut RtpSender, au: &AccessUnit, ts: u32) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        sender.packetize(au, ts, &mut scratch, &mut |p| out.push(p.to_vec()));
        out
    }

    fn video_au(nals: Vec<Vec<u8>>) -> AccessUnit {
        AccessUnit {
            kind: StreamKind::Video,
            send_90k: 0,
            rtp_offset: 0,
            is_key: true,
            nals: nals.into_iter().map(Bytes::from).collect(),
        }
    }

    #[test]
    fn fake_rtp_h264_single_and_fu_a() {
        let mut s = RtpSender::new(0x1234_5678, 65_535, StreamKind::Video, false);
        let big: Vec<u8> = std::iter::once(0x65).chain((0..3000).map(|i| i as u8)).collect();
        let pkts = collect(&mut s, &video_au(vec![vec![0x67, 1, 2], vec![0x68, 3], big.clone()]), 9000);
        assert_eq!(pkts.len(), 2 + 3);
        let parsed: Vec<_> = pkts.iter().map(|p| RtpPacket::parse(p).expect("valid rtp")).collect();
        assert_eq!(parsed[0].sequence_number(), 65_535);
        assert_eq!(parsed[1].sequence_number(), 0);
        assert!(parsed.iter().all(|p| p.timestamp() == 9000 && p.ssrc() == 0x1234_5678));
        assert_eq!(
            parsed.iter().map(|p| p.marker_bit()).collect::<Vec<_>>(),
            [false, false, false, false, true]
        );
        assert_eq!(parsed[0].payload(), &[0x67, 1, 2]);
        // FU-A: indicator keeps NRI, type 28; header S/E bits and type 5.
        let mut rebuilt = vec![0x65];
        for (i, p) in parsed[2..].iter().enumerate() {
            let pl = p.payload();
            assert!(pl.len() <= PAYLOAD_BYTES_MAX);
            assert_eq!(pl[0], 0x60 | 28);
            assert_eq!(pl[1] & 0x1f, 5);
            assert_eq!(pl[1] & 0x80 != 0, i == 0);
            assert_eq!(pl[1] & 0x40 != 0, i == 2);
            rebuilt.extend_from_slice(&pl[2..]);
        }
        assert_eq!(rebuilt, big);
    }

    #[test]
    fn fake_rtp_h265_fu() {
        let mut s = RtpSender::new(1, 0, StreamKind::Video, true);
        // IDR_W_RADL (type 19): header 0x26 0x01.
        let big: Vec<u8> = [0x26, 0x01].into_iter().chain((0..2000).map(|i| (i * 7) as u8)).collect();
        let pkts = collect(&mut s, &video_au(vec![big.clone()]), 0);
        assert_eq!(pkts.len(), 2);
        let mut rebuilt = vec![0x26, 0x01];
        for (i, raw) in pkts.iter().enumerate() {
            let p = RtpPacket::parse(raw).expect("valid rtp");
            let pl = p.payload();
            assert_eq!((pl[0] >> 1) & 0x3f, 49);
            assert_eq!(pl[1], 0x01);
            assert_eq!(pl[2] & 0x3f, 19);
            assert_eq!(pl[2] & 0x80 != 0, i == 0);
            assert_eq!(pl[2] & 0x40 != 0, i == 1);
            assert_eq!(p.marker_bit(), i == 1);
            rebuilt.extend_from_slice(&pl[3..]);
        }
        assert_eq!(rebuilt, big);
    }

    #[test]
    fn fake_rtp_aac_hbr() {
        let mut s = RtpSender::new(7, 10, StreamKind::Audio, false);
        let au = AccessUnit {
            kind: StreamKind::Audio,
            send_90k: 0,
            rtp_offset: 0,
            is_key: true,
            nals: vec![Bytes::from(vec![0xaa; 300])],
        };
        let pkts = collect(&mut s, &au, 1024);
        assert_eq!(pkts.len(), 1);
        let p = RtpPacket::parse(&pkts[0]).expect("valid rtp");
        assert_eq!(p.payload_type(), PAYLOAD_TYPE_AUDIO);
        assert!(p.marker_bit());
        let pl = p.payload();
        assert_eq!(&pl[..4], &[0x00, 0x10, (300u16 << 3 >> 8) as u8, (300u16 << 3) as u8]);
        assert_eq!(pl.len(), 304);
        assert_eq!((s.packets_sent, s.octets_sent), (1, 304));
    }

    #[test]
    fn fake_rtcp_sender_report_layout() {
        let mut s = RtpSender::new(0xdead_beef, 0, StreamKind::Video, false);
        s.packets_sent = 3;
        s.octets_sent = 4000;
        let sr = s.sender_report(0x0102_0304_0506_0708, 0x1122_3344, "camrec");
        assert_eq!(&sr[..4], &[0x80, 200, 0, 6]);
        assert_eq!(&sr[4..8], &0xdead_beef_u32.to_be_bytes());
        assert_eq!(&sr[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&sr[16..20], &0x1122_3344_u32.to_be_bytes());
        assert_eq!(&sr[20..24], &3u32.to_be_bytes());
        assert_eq!(&sr[24..28], &4000u32.to_be_bytes());
        // SDES: 4 header + 4 ssrc + 2 + 6 cname + 1 end = 17 → padded to 20 bytes = 5 words.
        assert_eq!(&sr[28..32], &[0x81, 202, 0, 4]);
        assert_eq!(sr.len(), 28 + 20);
        assert_eq!(&sr[36..44], b"\x01\x06camrec");
        assert_eq!(sr.len() % 4, 0);
    }

    #[test]
    fn fake_ntp_conversion() {
        let t = ntp_from_unix(std::time::Duration::from_millis(1500));
        assert_eq!(t >> 32, 2_208_988_801);
        assert_eq!(t & 0xffff_ffff, 1 << 31);
    }
}
