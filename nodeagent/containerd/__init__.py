"""containerd: config model, planning, applying, and talking CRI."""
