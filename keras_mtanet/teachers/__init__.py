"""Teachers: the labels FER+ lacks, distilled from other sources (kept light: MediaPipe is imported on use)."""
