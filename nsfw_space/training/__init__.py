"""Fine-tuning and evaluating on labelled image folders (the model card's recipe)."""
