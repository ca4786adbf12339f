"""Media I/O: streaming video decode at a fixed rate, audio at 16 kHz mono, VAD, encoding."""
