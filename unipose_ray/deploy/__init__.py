"""Using a trained model: ONNX export and its check, predictions on image files."""
