"""Audio edges and buffers: files, capture, resampling, the ring buffer."""
