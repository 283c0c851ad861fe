"""The Gradio page for the product matcher: ``python -m app`` serves it; ``app.ui.build_demo`` builds it."""
