"""Package data: ``mnist_5k.npz``, 5,000 real MNIST digits (CC BY-SA 3.0; see NOTICE)."""
