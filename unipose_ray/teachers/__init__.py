"""Teacher inference services: Ray actors that turn teacher crops into student-grid logits."""
