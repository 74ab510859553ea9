"""Element-wise operations: activations and other unit-wise functions carry every axis unchanged;
arithmetic between tensors ties the units that meet (a residual ``+`` makes one space of its
operands'); parameters and buffers in the arithmetic (a position embedding, a layer scale) follow
the units they are broadcast over."""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from robust_mc.core.tracing.graph import node_args
from robust_mc.core.tracing.layout import Free, Traced
from robust_mc.core.tracing.rulebook import for_functions, for_methods, for_modules
from robust_mc.models.normalize import Normalize

ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid,
                      nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Mish,
                      nn.CELU, nn.SELU, nn.Softsign, nn.Tanhshrink)
ACTIVATION_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu,
                        torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.hardswish,
                        F.hardsigmoid, F.hardtanh, F.softplus, F.mish, torch.relu_, F.celu,
                        F.selu)
ACTIVATION_METHODS = ("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_")
# unit-wise: entry i of the output depends on entry i of the input only
UNARY_FUNCTIONS = (torch.abs, torch.neg, torch.exp, torch.log, torch.sqrt, torch.rsqrt,
                   torch.square, torch.reciprocal, torch.erf, torch.sign, torch.clamp,
                   torch.clip, torch.pow, torch.sin, torch.cos, torch.clone, torch.nan_to_num,
                   F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout, operator.neg,
                   operator.abs, torch.softmax, F.softmax, F.log_softmax, torch.log_softmax)
UNARY_METHODS = ("abs", "abs_", "neg", "exp", "log", "sqrt", "rsqrt", "square", "reciprocal",
                 "erf", "sign", "clamp", "clamp_", "clamp_min", "clamp_max", "clip", "pow",
                 "contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "to",
                 "type", "type_as", "softmax", "log_softmax", "requires_grad_", "nan_to_num")
PASS_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity,
                nn.Softmax, nn.LogSoftmax, Normalize)
ARITHMETIC_FUNCTIONS = (operator.add, operator.iadd, torch.add, operator.mul, operator.imul,
                        torch.mul, operator.sub, operator.isub, torch.sub, operator.truediv,
                        operator.itruediv, torch.div, torch.maximum, torch.minimum, torch.where,
                        torch.lerp, torch.addcmul, torch.eq, torch.ne, torch.gt, torch.lt,
                        torch.ge, torch.le, operator.eq, operator.ne, operator.gt, operator.lt,
                        operator.ge, operator.le, torch.masked_fill)
ARITHMETIC_METHODS = ("add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_", "masked_fill",
                      "masked_fill_", "where", "lerp", "maximum", "minimum", "addcmul", "eq",
                      "ne", "gt", "lt", "ge", "le", "copy_")
SOFTMAX_DIM = ("softmax", "log_softmax")

if TYPE_CHECKING:
    from robust_mc.core.tracing.trace import Trace


@for_modules(*ACTIVATION_MODULES)
@for_functions(*ACTIVATION_FUNCTIONS)
@for_methods(*ACTIVATION_METHODS)
def activation(trace: Trace, node: Node) -> Traced:
    trace.activation(node)
    return trace.tensor(node)


@for_modules(nn.PReLU)
def prelu(trace: Trace, node: Node) -> Traced:
    layout = trace.tensor(node)
    module = trace.module(node)
    if module.num_parameters > 1:  # one slope per channel
        trace.record(trace.resolve(layout[1]), f"{node.target}.weight", 0)
    trace.activation(node)
    return layout


@for_modules(*PASS_MODULES)
@for_functions(*UNARY_FUNCTIONS)
@for_methods(*UNARY_METHODS)
def unary(trace: Trace, node: Node) -> Traced:
    """Unit-wise functions (softmax too: it treats every entry of its axis alike)."""
    return trace.tensor(node)


@for_functions(*ARITHMETIC_FUNCTIONS)
@for_methods(*ARITHMETIC_METHODS)
def arithmetic(trace: Trace, node: Node) -> Traced:
    """Tensors combined entry by entry, broadcast on their trailing axes."""
    operands = [trace.operand(a) for a in node_args((node.args, node.kwargs))]
    tensors = [t for t in operands if t is not None]
    shape = trace.shape(node)
    if not tensors or shape is None:
        raise trace.fail(node, "arithmetic on non-tensors:")
    out = trace.broadcast(tensors, len(shape), f"'{node.name}'")
    if len(tensors) > 1 and node.target in (operator.add, operator.iadd, torch.add, "add", "add_"):
        trace.producer(node)  # a residual sum: its units are a layer's outputs too
    return tuple(Free(s) if isinstance(d, Free) else d for d, s in zip(out, shape, strict=True))
