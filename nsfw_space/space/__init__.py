"""The Gradio Space: the page, its named API, and the checks at its door."""
