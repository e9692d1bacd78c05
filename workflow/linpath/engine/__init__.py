"""Training one network: models, data, augmentation, the loss, and the training loop that writes a
run directory (θ₀, θ_T, saved epochs, metrics, outcome)."""
