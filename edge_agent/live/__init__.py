"""Live view (视频秒开): a camera's frames encoded small (H.264, fragmented MP4) while someone watches."""
