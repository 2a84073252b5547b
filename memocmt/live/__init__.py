"""The realtime pipeline: capture -> VAD segmentation -> ASR -> emotion -> display.

Each stage lives in its own module and owns its state (`capture`, `vad`, `asr`,
`pipeline`, `display`); `cli` wires them to the command line. Importing this package
imports nothing heavy: sounddevice, webrtcvad, onnxruntime and faster-whisper are
loaded when a stage is built.
"""
