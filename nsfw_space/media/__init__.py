"""Bytes in, RGB frames out: images, animations, videos and URLs, within hard budgets. No torch."""
