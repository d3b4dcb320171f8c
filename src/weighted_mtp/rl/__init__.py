from weighted_mtp.rl.returns import discounted_reverse_cumsum, lambda_returns, masked_mean, sequence_mean

__all__ = ["discounted_reverse_cumsum", "lambda_returns", "masked_mean", "sequence_mean"]
