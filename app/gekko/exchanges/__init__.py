"""Adapters to real venues (Binance.US, Coinbase Advanced Trade, OANDA v20) behind one
interface (gekko.exchanges.base), built to each venue's official documentation; the paper
exchange in the trading service stays the default everywhere."""
