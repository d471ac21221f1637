"""Forecasting: the ensemble recipe, and the reference forecasts it is scored beside (statistical and naive)."""
