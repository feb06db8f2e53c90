"""Everything that touches FFmpeg (through PyAV): decoding, encoding, colour conversion, planes,
probing and scanning, segment concatenation, audio and subtitle copy. The only package that
imports `av`; no av object leaves it (Frame.source is an opaque handle only this package
reads)."""

from .decode import Decoder, check_input_path
from .encode import Encoder, container_for, default_output_suffix
from .remux import StreamIndex, concatenate, scan, segment_container

__all__ = ["Decoder", "Encoder", "StreamIndex", "check_input_path",
           "concatenate", "container_for", "default_output_suffix", "scan", "segment_container"]
