// p2pchat's web app, built by scripts/build-web.sh from daemon/web/app/ (edit those, then rebuild). Includes Preact 10 (MIT) and htm 3 (Apache-2.0): licences in daemon/web/app/vendor/.

// app/vendor/preact.module.js
var n;
var l;
var u;
var t;
var i;
var r;
var o;
var e;
var f;
var c;
var a;
var s;
var h;
var p;
var v;
var y;
var d = {};
var w = [];
var _ = /acit|ex(?:s|g|n|p|$)|rph|grid|ows|mnc|ntw|ine[ch]|zoo|^ord|itera/i;
var g = Array.isArray;
function m(n3, l3) {
  for (var u3 in l3) n3[u3] = l3[u3];
  return n3;
}
function b(n3) {
  n3 && n3.parentNode && n3.parentNode.removeChild(n3);
}
function k(l3, u3, t4) {
  var i3, r3, o3, e3 = {};
  for (o3 in u3) "key" == o3 ? i3 = u3[o3] : "ref" == o3 ? r3 = u3[o3] : e3[o3] = u3[o3];
  if (arguments.length > 2 && (e3.children = arguments.length > 3 ? n.call(arguments, 2) : t4), "function" == typeof l3 && null != l3.defaultProps) for (o3 in l3.defaultProps) void 0 === e3[o3] && (e3[o3] = l3.defaultProps[o3]);
  return x(l3, e3, i3, r3, null);
}
function x(n3, t4, i3, r3, o3) {
  var e3 = { type: n3, props: t4, key: i3, ref: r3, __k: null, __: null, __b: 0, __e: null, __c: null, constructor: void 0, __v: null == o3 ? ++u : o3, __i: -1, __u: 0 };
  return null == o3 && null != l.vnode && l.vnode(e3), e3;
}
function S(n3) {
  return n3.children;
}
function C(n3, l3) {
  this.props = n3, this.context = l3;
}
function $(n3, l3) {
  if (null == l3) return n3.__ ? $(n3.__, n3.__i + 1) : null;
  for (var u3; l3 < n3.__k.length; l3++) if (null != (u3 = n3.__k[l3]) && null != u3.__e) return u3.__e;
  return "function" == typeof n3.type ? $(n3) : null;
}
function I(n3) {
  if (n3.__P && n3.__d) {
    var u3 = n3.__v, t4 = u3.__e, i3 = [], r3 = [], o3 = m({}, u3);
    o3.__v = u3.__v + 1, l.vnode && l.vnode(o3), q(n3.__P, o3, u3, n3.__n, n3.__P.namespaceURI, 32 & u3.__u ? [t4] : null, i3, null == t4 ? $(u3) : t4, !!(32 & u3.__u), r3), o3.__v = u3.__v, o3.__.__k[o3.__i] = o3, D(i3, o3, r3), u3.__e = u3.__ = null, o3.__e != t4 && P(o3);
  }
}
function P(n3) {
  if (null != (n3 = n3.__) && null != n3.__c) return n3.__e = n3.__c.base = null, n3.__k.some(function(l3) {
    if (null != l3 && null != l3.__e) return n3.__e = n3.__c.base = l3.__e;
  }), P(n3);
}
function A(n3) {
  (!n3.__d && (n3.__d = true) && i.push(n3) && !H.__r++ || r != l.debounceRendering) && ((r = l.debounceRendering) || o)(H);
}
function H() {
  try {
    for (var n3, l3 = 1; i.length; ) i.length > l3 && i.sort(e), n3 = i.shift(), l3 = i.length, I(n3);
  } finally {
    i.length = H.__r = 0;
  }
}
function L(n3, l3, u3, t4, i3, r3, o3, e3, f3, c3, a3) {
  var s3, h3, p3, v3, y3, _3, g2 = t4 && t4.__k || w, m3 = l3.length;
  for (f3 = T(u3, l3, g2, f3, m3), s3 = 0; s3 < m3; s3++) null != (p3 = u3.__k[s3]) && (h3 = -1 != p3.__i && g2[p3.__i] || d, p3.__i = s3, _3 = q(n3, p3, h3, i3, r3, o3, e3, f3, c3, a3), v3 = p3.__e, p3.ref && h3.ref != p3.ref && (h3.ref && J(h3.ref, null, p3), a3.push(p3.ref, p3.__c || v3, p3)), null == y3 && null != v3 && (y3 = v3), 4 & p3.__u ? (f3 = j(p3, f3, n3), h3.__e && (h3.__e = null)) : "function" == typeof p3.type && void 0 !== _3 ? f3 = _3 : v3 && (f3 = v3.nextSibling), p3.__u &= -7);
  return u3.__e = y3, f3;
}
function T(n3, l3, u3, t4, i3) {
  var r3, o3, e3, f3, c3, a3 = u3.length, s3 = a3, h3 = 0;
  for (n3.__k = new Array(i3), r3 = 0; r3 < i3; r3++) null != (o3 = l3[r3]) && "boolean" != typeof o3 && "function" != typeof o3 ? ("string" == typeof o3 || "number" == typeof o3 || "bigint" == typeof o3 || o3.constructor == String ? o3 = n3.__k[r3] = x(null, o3, null, null, null) : g(o3) ? o3 = n3.__k[r3] = x(S, { children: o3 }, null, null, null) : void 0 === o3.constructor && o3.__b > 0 ? o3 = n3.__k[r3] = x(o3.type, o3.props, o3.key, o3.ref ? o3.ref : null, o3.__v) : n3.__k[r3] = o3, f3 = r3 + h3, o3.__ = n3, o3.__b = n3.__b + 1, e3 = null, -1 != (c3 = o3.__i = O(o3, u3, f3, s3)) && (s3--, (e3 = u3[c3]) && (e3.__u |= 2)), null == e3 || null == e3.__v ? (-1 == c3 && (i3 > a3 ? h3-- : i3 < a3 && h3++), "function" != typeof o3.type && (o3.__u |= 4)) : c3 != f3 && (c3 == f3 - 1 ? h3-- : c3 == f3 + 1 ? h3++ : (c3 > f3 ? h3-- : h3++, o3.__u |= 4))) : n3.__k[r3] = null;
  if (s3) for (r3 = 0; r3 < a3; r3++) null != (e3 = u3[r3]) && 0 == (2 & e3.__u) && (e3.__e == t4 && (t4 = $(e3)), K(e3, e3));
  return t4;
}
function j(n3, l3, u3) {
  var t4, i3;
  if ("function" == typeof n3.type) {
    for (t4 = n3.__k, i3 = 0; t4 && i3 < t4.length; i3++) t4[i3] && (t4[i3].__ = n3, l3 = j(t4[i3], l3, u3));
    return l3;
  }
  n3.__e != l3 && (l3 && n3.type && !l3.parentNode && (l3 = $(n3)), l3 = u3.insertBefore(n3.__e, l3 || null));
  do {
    l3 = l3 && l3.nextSibling;
  } while (null != l3 && 8 == l3.nodeType);
  return l3;
}
function O(n3, l3, u3, t4) {
  var i3, r3, o3, e3 = n3.key, f3 = n3.type, c3 = l3[u3], a3 = null != c3 && 0 == (2 & c3.__u);
  if (null === c3 && null == e3 || a3 && e3 == c3.key && f3 == c3.type) return u3;
  if (t4 > (a3 ? 1 : 0)) {
    for (i3 = u3 - 1, r3 = u3 + 1; i3 >= 0 || r3 < l3.length; ) if (null != (c3 = l3[o3 = i3 >= 0 ? i3-- : r3++]) && 0 == (2 & c3.__u) && e3 == c3.key && f3 == c3.type) return o3;
  }
  return -1;
}
function z(n3, l3, u3) {
  "-" == l3[0] ? n3.setProperty(l3, null == u3 ? "" : u3) : n3[l3] = null == u3 ? "" : "number" != typeof u3 || _.test(l3) ? u3 : u3 + "px";
}
function N(n3, l3, u3, t4, i3) {
  var r3, o3;
  n: if ("style" == l3) if ("string" == typeof u3) n3.style.cssText = u3;
  else {
    if ("string" == typeof t4 && (n3.style.cssText = t4 = ""), t4) for (l3 in t4) u3 && l3 in u3 || z(n3.style, l3, "");
    if (u3) for (l3 in u3) t4 && u3[l3] == t4[l3] || z(n3.style, l3, u3[l3]);
  }
  else if ("o" == l3[0] && "n" == l3[1]) r3 = l3 != (l3 = l3.replace(s, "$1")), o3 = l3.toLowerCase(), l3 = o3 in n3 || "onFocusOut" == l3 || "onFocusIn" == l3 ? o3.slice(2) : l3.slice(2), n3.l || (n3.l = {}), n3.l[l3 + r3] = u3, u3 ? t4 ? u3[a] = t4[a] : (u3[a] = h, n3.addEventListener(l3, r3 ? v : p, r3)) : n3.removeEventListener(l3, r3 ? v : p, r3);
  else {
    if ("http://www.w3.org/2000/svg" == i3) l3 = l3.replace(/xlink(H|:h)/, "h").replace(/sName$/, "s");
    else if ("width" != l3 && "height" != l3 && "href" != l3 && "list" != l3 && "form" != l3 && "tabIndex" != l3 && "download" != l3 && "rowSpan" != l3 && "colSpan" != l3 && "role" != l3 && "popover" != l3 && l3 in n3) try {
      n3[l3] = null == u3 ? "" : u3;
      break n;
    } catch (n4) {
    }
    "function" == typeof u3 || (null == u3 || false === u3 && "-" != l3[4] ? n3.removeAttribute(l3) : n3.setAttribute(l3, "popover" == l3 && 1 == u3 ? "" : u3));
  }
}
function V(n3) {
  return function(u3) {
    if (this.l) {
      var t4 = this.l[u3.type + n3];
      if (null == u3[c]) u3[c] = h++;
      else if (u3[c] < t4[a]) return;
      return t4(l.event ? l.event(u3) : u3);
    }
  };
}
function q(n3, u3, t4, i3, r3, o3, e3, f3, c3, a3) {
  var s3, h3, p3, v3, y3, d3, _3, k3, x2, M, I2, P2, A3, H2, T3, j3, F = u3.type;
  if (void 0 !== u3.constructor) return null;
  128 & t4.__u && (c3 = !!(32 & t4.__u), o3 = [f3 = u3.__e = t4.__e]), (s3 = l.__b) && s3(u3);
  n: if ("function" == typeof F) {
    h3 = e3.length;
    try {
      if (x2 = u3.props, M = F.prototype && F.prototype.render, I2 = (s3 = F.contextType) && i3[s3.__c], P2 = s3 ? I2 ? I2.props.value : s3.__ : i3, t4.__c ? k3 = (p3 = u3.__c = t4.__c).__ = p3.__E : (M ? u3.__c = p3 = new F(x2, P2) : (u3.__c = p3 = new C(x2, P2), p3.constructor = F, p3.render = Q), I2 && I2.sub(p3), p3.state || (p3.state = {}), p3.__n = i3, v3 = p3.__d = true, p3.__h = [], p3._sb = []), M && null == p3.__s && (p3.__s = p3.state), M && null != F.getDerivedStateFromProps && (p3.__s == p3.state && (p3.__s = m({}, p3.__s)), m(p3.__s, F.getDerivedStateFromProps(x2, p3.__s))), y3 = p3.props, d3 = p3.state, p3.__v = u3, v3) M && null == F.getDerivedStateFromProps && null != p3.componentWillMount && p3.componentWillMount(), M && null != p3.componentDidMount && p3.__h.push(p3.componentDidMount);
      else {
        if (M && null == F.getDerivedStateFromProps && x2 !== y3 && null != p3.componentWillReceiveProps && p3.componentWillReceiveProps(x2, P2), u3.__v == t4.__v || !p3.__e && null != p3.shouldComponentUpdate && false === p3.shouldComponentUpdate(x2, p3.__s, P2)) {
          u3.__v != t4.__v && (p3.props = x2, p3.state = p3.__s, p3.__d = false), u3.__e = t4.__e, u3.__k = t4.__k, u3.__k.some(function(n4) {
            n4 && (n4.__ = u3);
          }), w.push.apply(p3.__h, p3._sb), p3._sb = [], p3.__h.length && e3.push(p3), f3 = $(t4);
          break n;
        }
        null != p3.componentWillUpdate && p3.componentWillUpdate(x2, p3.__s, P2), M && null != p3.componentDidUpdate && p3.__h.push(function() {
          p3.componentDidUpdate(y3, d3, _3);
        });
      }
      if (p3.context = P2, p3.props = x2, p3.__P = n3, p3.__e = false, A3 = l.__r, H2 = 0, M) p3.state = p3.__s, p3.__d = false, A3 && A3(u3), s3 = p3.render(p3.props, p3.state, p3.context), w.push.apply(p3.__h, p3._sb), p3._sb = [];
      else do {
        p3.__d = false, A3 && A3(u3), s3 = p3.render(p3.props, p3.state, p3.context), p3.state = p3.__s;
      } while (p3.__d && ++H2 < 25);
      p3.state = p3.__s, null != p3.getChildContext && (i3 = m(m({}, i3), p3.getChildContext())), M && !v3 && null != p3.getSnapshotBeforeUpdate && (_3 = p3.getSnapshotBeforeUpdate(y3, d3)), T3 = null != s3 && s3.type === S && null == s3.key ? E(s3.props.children) : s3, f3 = L(n3, g(T3) ? T3 : [T3], u3, t4, i3, r3, o3, e3, f3, c3, a3), p3.base = u3.__e, u3.__u &= -161, p3.__h.length && e3.push(p3), k3 && (p3.__E = p3.__ = null);
    } catch (n4) {
      if (e3.length = h3, u3.__v = null, c3 || null != o3) {
        if (n4.then) {
          for (u3.__u |= c3 ? 160 : 128; f3 && 8 == f3.nodeType && f3.nextSibling; ) f3 = f3.nextSibling;
          null != o3 && (o3[o3.indexOf(f3)] = null), u3.__e = f3;
        } else if (null != o3) for (j3 = o3.length; j3--; ) b(o3[j3]);
      } else u3.__e = t4.__e;
      null == u3.__k && (u3.__k = t4.__k || []), n4.then || B(u3), l.__e(n4, u3, t4);
    }
  } else null == o3 && u3.__v == t4.__v ? (u3.__k = t4.__k, u3.__e = t4.__e) : f3 = u3.__e = G(t4.__e, u3, t4, i3, r3, o3, e3, c3, a3);
  return (s3 = l.diffed) && s3(u3), 128 & u3.__u ? void 0 : f3;
}
function B(n3) {
  n3 && (n3.__c && (n3.__c.__e = true), n3.__k && n3.__k.some(B));
}
function D(n3, u3, t4) {
  for (var i3 = 0; i3 < t4.length; i3++) J(t4[i3], t4[++i3], t4[++i3]);
  l.__c && l.__c(u3, n3), n3.some(function(u4) {
    try {
      n3 = u4.__h, u4.__h = [], n3.some(function(n4) {
        n4.call(u4);
      });
    } catch (n4) {
      l.__e(n4, u4.__v);
    }
  });
}
function E(n3) {
  return "object" != typeof n3 || null == n3 || n3.__b > 0 ? n3 : g(n3) ? n3.map(E) : void 0 !== n3.constructor ? null : m({}, n3);
}
function G(u3, t4, i3, r3, o3, e3, f3, c3, a3) {
  var s3, h3, p3, v3, y3, w3, _3, m3 = i3.props || d, k3 = t4.props, x2 = t4.type;
  if ("svg" == x2 ? o3 = "http://www.w3.org/2000/svg" : "math" == x2 ? o3 = "http://www.w3.org/1998/Math/MathML" : o3 || (o3 = "http://www.w3.org/1999/xhtml"), null != e3) {
    for (s3 = 0; s3 < e3.length; s3++) if ((y3 = e3[s3]) && "setAttribute" in y3 == !!x2 && (x2 ? y3.localName == x2 : 3 == y3.nodeType)) {
      u3 = y3, e3[s3] = null;
      break;
    }
  }
  if (null == u3) {
    if (null == x2) return document.createTextNode(k3);
    u3 = document.createElementNS(o3, x2, k3.is && k3), c3 && (l.__m && l.__m(t4, e3), c3 = false), e3 = null;
  }
  if (null == x2) m3 === k3 || c3 && u3.data == k3 || (u3.data = k3);
  else {
    if (e3 = "textarea" == x2 && null != k3.defaultValue ? null : e3 && n.call(u3.childNodes), !c3 && null != e3) for (m3 = {}, s3 = 0; s3 < u3.attributes.length; s3++) m3[(y3 = u3.attributes[s3]).name] = y3.value;
    for (s3 in m3) y3 = m3[s3], "dangerouslySetInnerHTML" == s3 ? p3 = y3 : "children" == s3 || s3 in k3 || "value" == s3 && "defaultValue" in k3 || "checked" == s3 && "defaultChecked" in k3 || N(u3, s3, null, y3, o3);
    for (s3 in k3) y3 = k3[s3], "children" == s3 ? v3 = y3 : "dangerouslySetInnerHTML" == s3 ? h3 = y3 : "value" == s3 ? w3 = y3 : "checked" == s3 ? _3 = y3 : c3 && "function" != typeof y3 || m3[s3] === y3 || N(u3, s3, y3, m3[s3], o3);
    if (h3) c3 || p3 && (h3.__html == p3.__html || h3.__html == u3.innerHTML) || (u3.innerHTML = h3.__html), t4.__k = [];
    else if (p3 && (u3.innerHTML = ""), L("template" == t4.type ? u3.content : u3, g(v3) ? v3 : [v3], t4, i3, r3, "foreignObject" == x2 ? "http://www.w3.org/1999/xhtml" : o3, e3, f3, e3 ? e3[0] : i3.__k && $(i3, 0), c3, a3), null != e3) for (s3 = e3.length; s3--; ) b(e3[s3]);
    c3 && "textarea" != x2 || (s3 = "value", "progress" == x2 && null == w3 ? u3.removeAttribute("value") : null != w3 && (w3 !== u3[s3] || "progress" == x2 && !w3 || "option" == x2 && w3 != m3[s3]) && N(u3, s3, w3, m3[s3], o3), s3 = "checked", null != _3 && _3 != u3[s3] && N(u3, s3, _3, m3[s3], o3));
  }
  return u3;
}
function J(n3, u3, t4) {
  try {
    if ("function" == typeof n3) {
      var i3 = "function" == typeof n3.__u;
      i3 && n3.__u(), i3 && null == u3 || (n3.__u = n3(u3));
    } else n3.current = u3;
  } catch (n4) {
    l.__e(n4, t4);
  }
}
function K(n3, u3, t4) {
  var i3, r3;
  if (l.unmount && l.unmount(n3), (i3 = n3.ref) && (i3.current && i3.current != n3.__e || J(i3, null, u3)), null != (i3 = n3.__c)) {
    if (i3.componentWillUnmount) try {
      i3.componentWillUnmount();
    } catch (n4) {
      l.__e(n4, u3);
    }
    i3.base = i3.__P = i3.__n = null;
  }
  if (i3 = n3.__k) for (r3 = 0; r3 < i3.length; r3++) i3[r3] && K(i3[r3], u3, t4 || "function" != typeof n3.type);
  t4 || b(n3.__e), n3.__c = n3.__ = n3.__e = void 0;
}
function Q(n3, l3, u3) {
  return this.constructor(n3, u3);
}
function R(u3, t4, i3) {
  var r3, o3, e3, f3;
  t4 == document && (t4 = document.documentElement), l.__ && l.__(u3, t4), o3 = (r3 = "function" == typeof i3) ? null : i3 && i3.__k || t4.__k, e3 = [], f3 = [], q(t4, u3 = (!r3 && i3 || t4).__k = k(S, null, [u3]), o3 || d, d, t4.namespaceURI, !r3 && i3 ? [i3] : o3 ? null : t4.firstChild ? n.call(t4.childNodes) : null, e3, !r3 && i3 ? i3 : o3 ? o3.__e : t4.firstChild, r3, f3), D(e3, u3, f3), u3.props.children = null;
}
n = w.slice, l = { __e: function(n3, l3, u3, t4) {
  for (var i3, r3, o3; l3 = l3.__; ) if ((i3 = l3.__c) && !i3.__) try {
    if ((r3 = i3.constructor) && null != r3.getDerivedStateFromError && (i3.setState(r3.getDerivedStateFromError(n3)), o3 = i3.__d), null != i3.componentDidCatch && (i3.componentDidCatch(n3, t4 || {}), o3 = i3.__d), o3) return i3.__E = i3;
  } catch (l4) {
    n3 = l4;
  }
  throw n3;
} }, u = 0, t = function(n3) {
  return null != n3 && void 0 === n3.constructor;
}, C.prototype.setState = function(n3, l3) {
  var u3;
  u3 = null != this.__s && this.__s != this.state ? this.__s : this.__s = m({}, this.state), "function" == typeof n3 && (n3 = n3(m({}, u3), this.props)), n3 && m(u3, n3), null != n3 && this.__v && (l3 && this._sb.push(l3), A(this));
}, C.prototype.forceUpdate = function(n3) {
  this.__v && (this.__e = true, n3 && this.__h.push(n3), A(this));
}, C.prototype.render = S, i = [], o = "function" == typeof Promise ? Promise.prototype.then.bind(Promise.resolve()) : setTimeout, e = function(n3, l3) {
  return n3.__v.__b - l3.__v.__b;
}, H.__r = 0, f = Math.random().toString(8), c = "__d" + f, a = "__a" + f, s = /(PointerCapture)$|Capture$/i, h = 0, p = V(false), v = V(true), y = 0;

// app/vendor/htm.module.js
var n2 = function(t4, s3, r3, e3) {
  var u3;
  s3[0] = 0;
  for (var h3 = 1; h3 < s3.length; h3++) {
    var p3 = s3[h3++], a3 = s3[h3] ? (s3[0] |= p3 ? 1 : 2, r3[s3[h3++]]) : s3[++h3];
    3 === p3 ? e3[0] = a3 : 4 === p3 ? e3[1] = Object.assign(e3[1] || {}, a3) : 5 === p3 ? (e3[1] = e3[1] || {})[s3[++h3]] = a3 : 6 === p3 ? e3[1][s3[++h3]] += a3 + "" : p3 ? (u3 = t4.apply(a3, n2(t4, a3, r3, ["", null])), e3.push(u3), a3[0] ? s3[0] |= 2 : (s3[h3 - 2] = 0, s3[h3] = u3)) : e3.push(a3);
  }
  return e3;
};
var t2 = /* @__PURE__ */ new Map();
function htm_module_default(s3) {
  var r3 = t2.get(this);
  return r3 || (r3 = /* @__PURE__ */ new Map(), t2.set(this, r3)), (r3 = n2(this, r3.get(s3) || (r3.set(s3, r3 = (function(n3) {
    for (var t4, s4, r4 = 1, e3 = "", u3 = "", h3 = [0], p3 = function(n4) {
      1 === r4 && (n4 || (e3 = e3.replace(/^\s*\n\s*|\s*\n\s*$/g, ""))) ? h3.push(0, n4, e3) : 3 === r4 && (n4 || e3) ? (h3.push(3, n4, e3), r4 = 2) : 2 === r4 && "..." === e3 && n4 ? h3.push(4, n4, 0) : 2 === r4 && e3 && !n4 ? h3.push(5, 0, true, e3) : r4 >= 5 && ((e3 || !n4 && 5 === r4) && (h3.push(r4, 0, e3, s4), r4 = 6), n4 && (h3.push(r4, n4, 0, s4), r4 = 6)), e3 = "";
    }, a3 = 0; a3 < n3.length; a3++) {
      a3 && (1 === r4 && p3(), p3(a3));
      for (var l3 = 0; l3 < n3[a3].length; l3++) t4 = n3[a3][l3], 1 === r4 ? "<" === t4 ? (p3(), h3 = [h3], r4 = 3) : e3 += t4 : 4 === r4 ? "--" === e3 && ">" === t4 ? (r4 = 1, e3 = "") : e3 = t4 + e3[0] : u3 ? t4 === u3 ? u3 = "" : e3 += t4 : '"' === t4 || "'" === t4 ? u3 = t4 : ">" === t4 ? (p3(), r4 = 1) : r4 && ("=" === t4 ? (r4 = 5, s4 = e3, e3 = "") : "/" === t4 && (r4 < 5 || ">" === n3[a3][l3 + 1]) ? (p3(), 3 === r4 && (h3 = h3[0]), r4 = h3, (h3 = h3[0]).push(2, 0, r4), r4 = 0) : " " === t4 || "	" === t4 || "\n" === t4 || "\r" === t4 ? (p3(), r4 = 2) : e3 += t4), 3 === r4 && "!--" === e3 && (r4 = 4, h3 = h3[0]);
    }
    return p3(), h3;
  })(s3)), r3), arguments, [])).length > 1 ? r3 : r3[0];
}

// app/html.js
var html = htm_module_default.bind(k);

// app/store.js
var state = {
  phase: "boot",
  // boot | login | app
  loginReason: "",
  // why the log-in page shows: "", "wrong_token", "rotated"
  conn: "connecting",
  // connecting | open | down
  retryAt: 0,
  loaded: false,
  // the first lists have arrived (the page is interactive)
  me: null,
  // identity.get
  status: null,
  // status
  contacts: {},
  // peer_id -> Contact (every state)
  convs: {},
  // peer_id -> {messages, loaded, loading, done, error}
  transfers: {},
  // id -> Transfer
  progress: {},
  // id -> {bytes, size, rate, at}
  uploads: {},
  // key -> {key, friend, name, loaded, total, error}
  call: null,
  // the daemon's current Call (null when none)
  media: null,
  // this page's media for a call it owns (see call.js)
  groups: {},
  // id -> Group
  gconvs: {},
  // group id -> {messages, loaded, loading, error}
  view: "home",
  // home | chat | group | status
  selected: null,
  // peer_id of the open conversation
  selectedGroup: null,
  // id of the open group
  newGroup: { name: "", error: "", busy: false },
  pane: "list",
  // phones: list | main
  add: { id: "", name: "", message: "", error: "", busy: false },
  toasts: [],
  copied: ""
  // which copy button just copied
};
var listeners = /* @__PURE__ */ new Set();
var queued = false;
function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
function changed() {
  if (queued) return;
  queued = true;
  queueMicrotask(() => {
    queued = false;
    for (const fn of listeners) fn();
  });
}
var toastId = 0;
function toast(text, kind = "info", ms = 4e3) {
  const id = ++toastId;
  state.toasts = [...state.toasts, { id, text, kind }];
  changed();
  setTimeout(() => {
    state.toasts = state.toasts.filter((t4) => t4.id !== id);
    changed();
  }, ms);
}

// app/rpc.js
var RpcError = class extends Error {
  constructor(error) {
    super(error && error.message || "request failed");
    this.code = error && error.code;
    this.name_ = error && error.data && error.data.name || "error";
    this.data = error && error.data || {};
  }
};
var NOT_CONNECTED = { code: 0, message: "the daemon is not reachable", data: { name: "not_connected" } };
var BACKOFF_MS = [250, 500, 1e3, 2e3, 4e3, 8e3];
var Rpc = class {
  /**
   * @param {object} handlers onOpen(), onEvent(params), onDown({code, retryAt}), onRotated()
   */
  constructor(handlers) {
    this.h = handlers;
    this.ws = null;
    this.nextId = 1;
    this.pending = /* @__PURE__ */ new Map();
    this.failures = 0;
    this.timer = null;
    this.stopped = false;
    this.openWaiters = [];
  }
  /** Resolves when the socket is next open (at once if it is), or after timeoutMs anyway. */
  whenOpen(timeoutMs) {
    if (this.open) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.openWaiters = this.openWaiters.filter((w3) => w3 !== done);
        resolve();
      }, Math.max(0, timeoutMs));
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.openWaiters.push(done);
    });
  }
  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/api/ws`;
  }
  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.stopped) return;
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch (err) {
      this.scheduleReconnect(1006);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.failures = 0;
      this.h.onOpen();
      const waiters = this.openWaiters;
      this.openWaiters = [];
      for (const w3 of waiters) w3();
    };
    ws.onmessage = (e3) => this.receive(e3.data);
    ws.onclose = (e3) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.failAll();
      if (e3.code === 4401) {
        this.stopped = true;
        this.h.onRotated();
        return;
      }
      this.scheduleReconnect(e3.code);
    };
    ws.onerror = () => {
    };
  }
  scheduleReconnect(code) {
    if (this.stopped) return;
    const delay = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length - 1)];
    this.failures += 1;
    const retryAt = Date.now() + delay;
    this.timer = setTimeout(() => this.connect(), delay);
    this.h.onDown({ code, retryAt });
  }
  /** Reconnect at once (the "retry now" button). */
  retryNow() {
    if (this.ws || this.stopped) return;
    this.failures = 0;
    this.connect();
  }
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1e3);
    this.ws = null;
    this.failAll();
  }
  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }
  receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (err) {
      return;
    }
    if (msg.method === "event" && msg.params) {
      try {
        this.h.onEvent(msg.params);
      } catch (err) {
        console.error("event handler failed", msg.params, err);
      }
      return;
    }
    const waiter = this.pending.get(msg.id);
    if (!waiter) return;
    this.pending.delete(msg.id);
    if (msg.error) waiter.reject(new RpcError(msg.error));
    else waiter.resolve(msg.result);
  }
  failAll() {
    const waiters = [...this.pending.values()];
    this.pending.clear();
    for (const w3 of waiters) w3.reject(new RpcError(NOT_CONNECTED));
  }
  /** One request; resolves with its result or rejects with an RpcError. */
  call(method, params = {}) {
    if (!this.open) return Promise.reject(new RpcError(NOT_CONNECTED));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    });
  }
};

// app/call.js
var GATHER_TIMEOUT_MS = 5e3;
var STATS_EVERY_MS = 1e3;
var pc = null;
var statsTimer = null;
var pendingCandidates = [];
var earlyMedia = [];
var prevStats = /* @__PURE__ */ new WeakMap();
var endedIds = /* @__PURE__ */ new Set();
function media() {
  return state.media;
}
async function iceServers() {
  try {
    const { ice_servers: servers } = await rpc.call("calls.ice_servers");
    return Array.isArray(servers) ? servers : [];
  } catch (err) {
    return [];
  }
}
async function capture(video) {
  const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  const cam = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } };
  const tries = video ? [{ audio, video: cam }, { audio: false, video: cam }, { audio, video: false }] : [{ audio, video: false }];
  let lastErr = null;
  for (const constraints of tries) {
    try {
      return await navigator.mediaDevices.getUserMedia(constraints);
    } catch (err) {
      lastErr = err;
    }
  }
  const why = lastErr ? `${lastErr.name}: ${lastErr.message}` : "no media devices";
  toast(`No ${video ? "camera or microphone" : "microphone"} (${why}); the call goes on without sending`, "error", 8e3);
  return new MediaStream();
}
function gathered(conn) {
  return new Promise((resolve) => {
    if (conn.iceGatheringState === "complete") {
      resolve();
      return;
    }
    const timer = setTimeout(resolve, GATHER_TIMEOUT_MS);
    conn.addEventListener("icegatheringstatechange", () => {
      if (conn.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}
function newMedia(video, direction) {
  state.media = {
    callId: null,
    direction,
    video,
    local: null,
    remote: new MediaStream(),
    remoteTracks: 0,
    muted: false,
    camOff: false,
    connection: "new",
    stats: null
  };
  changed();
  return state.media;
}
function makePc(servers, m3) {
  const conn = new RTCPeerConnection({ iceServers: servers });
  conn.ontrack = (e3) => {
    if (media() !== m3) return;
    if (!m3.remote.getTracks().includes(e3.track)) m3.remote.addTrack(e3.track);
    m3.remoteTracks = m3.remote.getTracks().length;
    changed();
  };
  conn.onconnectionstatechange = () => {
    if (media() !== m3) return;
    m3.connection = conn.connectionState;
    changed();
    if (m3.callId) report({ state: conn.connectionState });
  };
  return conn;
}
async function report(fields) {
  const m3 = media();
  if (!m3 || !m3.callId) return;
  try {
    await rpc.call("calls.report", { id: m3.callId, ...fields });
  } catch (err) {
  }
}
function startStats() {
  clearInterval(statsTimer);
  statsTimer = setInterval(async () => {
    const m3 = media();
    if (!m3 || !pc) return;
    const stats = await collectStats(pc);
    if (media() !== m3) return;
    m3.stats = stats;
    changed();
    if (m3.callId) report({ stats });
  }, STATS_EVERY_MS);
}
function candidateText(c3) {
  if (!c3) return "";
  const addr = c3.address || c3.ip || "?";
  return `${addr.includes(":") ? `[${addr}]` : addr}:${c3.port} ${c3.candidateType}`;
}
async function collectStats(conn) {
  const report2 = await conn.getStats();
  const now = performance.now();
  const out = {
    state: conn.connectionState,
    codecs: [],
    fps: 0,
    video_frames_in: 0,
    frames_decoded: 0,
    bytes_in: 0,
    bytes_out: 0,
    kbps_in: null,
    // null until a second sample gives a rate
    kbps_out: null,
    audio_in: { packets: 0, lost: 0, jitter: 0 },
    video_in: { packets: 0, lost: 0, jitter: 0 },
    audio_out: { packets: 0, bytes: 0 },
    video_out: { packets: 0, bytes: 0 },
    rtt_ms: null,
    dtls: "",
    srtp: false,
    path: null,
    resolution: ""
  };
  const codecs = /* @__PURE__ */ new Set();
  let pairId = null;
  let nominated = null;
  report2.forEach((s3) => {
    if (s3.type === "inbound-rtp") {
      const side = s3.kind === "video" ? out.video_in : out.audio_in;
      side.packets += s3.packetsReceived || 0;
      side.lost += s3.packetsLost || 0;
      side.jitter = s3.jitter || 0;
      out.bytes_in += s3.bytesReceived || 0;
      if (s3.kind === "video") {
        out.frames_decoded += s3.framesDecoded || 0;
        out.video_frames_in += s3.framesReceived || s3.framesDecoded || 0;
        if (s3.framesPerSecond) out.fps = s3.framesPerSecond;
        if (s3.frameWidth) out.resolution = `${s3.frameWidth}×${s3.frameHeight}`;
      }
      const codec = s3.codecId && report2.get(s3.codecId);
      if (codec && codec.mimeType) codecs.add(codec.mimeType);
    } else if (s3.type === "outbound-rtp") {
      const side = s3.kind === "video" ? out.video_out : out.audio_out;
      side.packets += s3.packetsSent || 0;
      side.bytes += s3.bytesSent || 0;
      out.bytes_out += s3.bytesSent || 0;
      const codec = s3.codecId && report2.get(s3.codecId);
      if (codec && codec.mimeType) codecs.add(codec.mimeType);
    } else if (s3.type === "transport") {
      if (s3.selectedCandidatePairId) pairId = s3.selectedCandidatePairId;
      if (s3.dtlsState) out.dtls = s3.dtlsState;
      out.srtp = s3.dtlsState === "connected" && !!s3.srtpCipher;
    } else if (s3.type === "candidate-pair" && s3.nominated && s3.state === "succeeded") {
      nominated = s3;
    }
  });
  const pair = pairId && report2.get(pairId) || nominated;
  if (pair) {
    const local = report2.get(pair.localCandidateId);
    const remote = report2.get(pair.remoteCandidateId);
    out.path = {
      local: candidateText(local),
      remote: candidateText(remote),
      relayed: !!(local && local.candidateType === "relay" || remote && remote.candidateType === "relay")
    };
    if (pair.currentRoundTripTime != null) out.rtt_ms = Math.round(pair.currentRoundTripTime * 1e3);
  }
  out.codecs = [...codecs].sort();
  const prev = prevStats.get(conn);
  if (prev) {
    const dt = (now - prev.at) / 1e3;
    if (dt > 0) {
      out.kbps_in = Math.max(0, Math.round((out.bytes_in - prev.bytes_in) * 8 / dt / 1e3));
      out.kbps_out = Math.max(0, Math.round((out.bytes_out - prev.bytes_out) * 8 / dt / 1e3));
      if (!out.fps) out.fps = Math.max(0, Math.round((out.frames_decoded - prev.frames_decoded) / dt));
    }
  }
  prevStats.set(conn, { at: now, bytes_in: out.bytes_in, bytes_out: out.bytes_out, frames_decoded: out.frames_decoded });
  out.fps = Math.round(out.fps * 10) / 10;
  return out;
}
function addLocalTracks(conn, m3, stream, offering) {
  m3.local = stream;
  const audio = stream.getAudioTracks()[0];
  const video = stream.getVideoTracks()[0];
  if (offering) {
    conn.addTransceiver(audio || "audio", {
      direction: audio ? "sendrecv" : "recvonly",
      streams: [stream]
    });
    if (m3.video) {
      conn.addTransceiver(video || "video", {
        direction: video ? "sendrecv" : "recvonly",
        streams: [stream]
      });
    }
  } else {
    if (audio) conn.addTrack(audio, stream);
    if (video && m3.video) conn.addTrack(video, stream);
  }
}
async function startCall(peer, video) {
  if (state.media || state.call) {
    toast("Already in a call", "error");
    return;
  }
  const m3 = newMedia(video, "out");
  earlyMedia = [];
  try {
    const [servers, stream] = await Promise.all([iceServers(), capture(video)]);
    if (media() !== m3) {
      stream.getTracks().forEach((t4) => t4.stop());
      return;
    }
    pc = makePc(servers, m3);
    addLocalTracks(pc, m3, stream, true);
    changed();
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    if (media() !== m3) return;
    const { call } = await rpc.call("calls.start", {
      friend: peer,
      audio_only: !video,
      media: "browser",
      sdp: pc.localDescription.sdp
    });
    if (media() !== m3) {
      rpc.call("calls.hangup", { friend: call.peer_id }).catch(() => {
      });
      return;
    }
    m3.callId = call.id;
    if (endedIds.has(call.id)) {
      teardown();
      return;
    }
    if (!state.call || state.call.id !== call.id) state.call = call;
    startStats();
    changed();
    const early = earlyMedia;
    earlyMedia = [];
    for (const ev of early) await onMedia(ev);
  } catch (err) {
    if (media() === m3) teardown();
    toast(`Call failed: ${err.message}`, "error", 8e3);
  }
}
async function answer() {
  const ringing = state.call;
  if (!ringing || ringing.state !== "ringing_in" || state.media) return;
  const m3 = newMedia(ringing.video, "in");
  try {
    const offer = await rpc.call("calls.remote_offer");
    m3.callId = offer.call_id;
    m3.video = !!offer.video;
    const [servers, stream] = await Promise.all([iceServers(), capture(m3.video)]);
    if (media() !== m3) {
      stream.getTracks().forEach((t4) => t4.stop());
      return;
    }
    pc = makePc(servers, m3);
    await pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
    addLocalTracks(pc, m3, stream, false);
    changed();
    await flushCandidates();
    await pc.setLocalDescription(await pc.createAnswer());
    await gathered(pc);
    if (media() !== m3) return;
    const { call } = await rpc.call("calls.answer", { media: "browser", sdp: pc.localDescription.sdp });
    if (media() !== m3) {
      rpc.call("calls.hangup", { friend: call.peer_id }).catch(() => {
      });
      return;
    }
    if (!endedIds.has(call.id)) state.call = call;
    startStats();
    changed();
  } catch (err) {
    if (media() === m3) teardown();
    toast(`Could not answer: ${err.message}`, "error", 8e3);
  }
}
async function hangup() {
  const call = state.call;
  try {
    await rpc.call("calls.hangup", call ? { friend: call.peer_id } : {});
  } catch (err) {
    if (err.name_ !== "not_found") toast(err.message, "error");
  }
  if (media() && (!call || media().callId === call.id || !media().callId)) teardown();
}
function toggleMute() {
  const m3 = media();
  if (!m3 || !m3.local) return;
  m3.muted = !m3.muted;
  m3.local.getAudioTracks().forEach((t4) => {
    t4.enabled = !m3.muted;
  });
  changed();
}
function toggleCamera() {
  const m3 = media();
  if (!m3 || !m3.local) return;
  m3.camOff = !m3.camOff;
  m3.local.getVideoTracks().forEach((t4) => {
    t4.enabled = !m3.camOff;
  });
  changed();
}
async function flushCandidates() {
  const list = pendingCandidates;
  pendingCandidates = [];
  for (const c3 of list) {
    try {
      await pc.addIceCandidate(c3);
    } catch (err) {
      console.warn("remote candidate refused", c3, err);
    }
  }
}
async function onMedia(ev) {
  const m3 = media();
  if (!m3) return;
  if (!m3.callId) {
    earlyMedia.push(ev);
    return;
  }
  if (ev.call_id !== m3.callId || !pc) return;
  try {
    if (ev.kind === "answer") {
      await pc.setRemoteDescription({ type: "answer", sdp: ev.sdp });
      await flushCandidates();
    } else if (ev.kind === "candidate") {
      let text = ev.candidate || "";
      if (text && !text.startsWith("candidate:")) text = `candidate:${text}`;
      const init = { candidate: text, sdpMid: ev.mid ?? null, sdpMLineIndex: ev.index ?? null };
      if (pc.remoteDescription) await pc.addIceCandidate(init);
      else pendingCandidates.push(init);
    }
  } catch (err) {
    console.warn("call.media not applied", ev, err);
  }
}
function onCall(call) {
  if (call && call.state === "ended") endedIds.add(call.id);
  const m3 = media();
  if (!m3) return;
  if (!call) {
    if (m3.callId) teardown();
    return;
  }
  if (call.state === "ended" && (m3.callId === call.id || !m3.callId && m3.direction === "in")) {
    teardown();
  }
}
function teardown() {
  clearInterval(statsTimer);
  statsTimer = null;
  const m3 = media();
  if (m3 && m3.local) m3.local.getTracks().forEach((t4) => t4.stop());
  if (pc) {
    pc.ontrack = null;
    pc.onconnectionstatechange = null;
    pc.close();
  }
  pc = null;
  pendingCandidates = [];
  earlyMedia = [];
  state.media = null;
  changed();
}

// app/format.js
var UNITS = ["B", "KB", "MB", "GB", "TB", "PB"];
function bytes(n3) {
  if (n3 == null || !isFinite(n3)) return "?";
  let i3 = 0;
  let v3 = Math.max(0, n3);
  while (v3 >= 1e3 && i3 < UNITS.length - 1) {
    v3 /= 1024;
    i3 += 1;
  }
  const digits = i3 === 0 || v3 >= 100 ? 0 : v3 >= 10 ? 1 : 2;
  return `${v3.toFixed(digits)} ${UNITS[i3]}`;
}
function rate(bytesPerSecond) {
  return `${bytes(bytesPerSecond)}/s`;
}
function duration(seconds) {
  if (seconds == null || !isFinite(seconds) || seconds < 0) return "";
  const s3 = Math.round(seconds);
  if (s3 < 60) return `${s3} s`;
  const m3 = Math.floor(s3 / 60);
  if (m3 < 60) return `${m3} min ${String(s3 % 60).padStart(2, "0")} s`;
  const h3 = Math.floor(m3 / 60);
  return `${h3} h ${String(m3 % 60).padStart(2, "0")} min`;
}
function clock(ms) {
  const s3 = Math.max(0, Math.floor(ms / 1e3));
  const h3 = Math.floor(s3 / 3600);
  const m3 = Math.floor(s3 % 3600 / 60);
  const sec = String(s3 % 60).padStart(2, "0");
  return h3 ? `${h3}:${String(m3).padStart(2, "0")}:${sec}` : `${m3}:${sec}`;
}
function sameDay(a3, b2) {
  return a3.getFullYear() === b2.getFullYear() && a3.getMonth() === b2.getMonth() && a3.getDate() === b2.getDate();
}
var TIME = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit" });
var DAY = { weekday: "short", day: "numeric", month: "short" };
var DAY_THIS_YEAR = new Intl.DateTimeFormat([], DAY);
var DAY_OTHER_YEAR = new Intl.DateTimeFormat([], { ...DAY, year: "numeric" });
function time(ms) {
  return TIME.format(new Date(ms));
}
function day(ms) {
  const d3 = new Date(ms);
  const now = /* @__PURE__ */ new Date();
  if (sameDay(d3, now)) return "Today";
  const y3 = new Date(now);
  y3.setDate(now.getDate() - 1);
  if (sameDay(d3, y3)) return "Yesterday";
  return (d3.getFullYear() === now.getFullYear() ? DAY_THIS_YEAR : DAY_OTHER_YEAR).format(d3);
}
function dayKey(ms) {
  const d3 = new Date(ms);
  return `${d3.getFullYear()}-${d3.getMonth()}-${d3.getDate()}`;
}
function shortId(id) {
  return id && id.length > 20 ? `${id.slice(0, 16)}…` : id || "";
}
function hue(id) {
  let h3 = 0;
  for (let i3 = 0; i3 < (id || "").length; i3 += 1) h3 = h3 * 31 + id.charCodeAt(i3) >>> 0;
  return `hue-${h3 % 8}`;
}
function initial(name) {
  const c3 = (name || "?").trim()[0] || "?";
  return c3.toUpperCase();
}
function randomHex(bytesCount = 16) {
  const a3 = new Uint8Array(bytesCount);
  crypto.getRandomValues(a3);
  return Array.from(a3, (b2) => b2.toString(16).padStart(2, "0")).join("");
}
function plural(n3, word) {
  return `${n3} ${word}${n3 === 1 ? "" : "s"}`;
}

// app/app.js
var rpc = new Rpc({
  onOpen: () => connected(),
  onEvent: (params) => onEvent(params),
  onDown: ({ retryAt }) => disconnected(retryAt),
  onRotated: () => {
    state.phase = "login";
    state.loginReason = "rotated";
    teardown();
    changed();
  }
});
var HISTORY_PAGE = 50;
async function post(path, body) {
  return fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin"
  });
}
async function sessionState() {
  try {
    const r3 = await fetch("/api/session", { credentials: "same-origin" });
    if (r3.ok) return "ok";
    return r3.status === 401 ? "none" : "down";
  } catch (err) {
    return "down";
  }
}
async function boot() {
  let loggedIn = false;
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (match) {
    const token = decodeURIComponent(match[1]);
    history.replaceState(null, "", location.pathname + location.search);
    try {
      const r3 = await post("/api/login", { token });
      if (r3.status === 403) state.loginReason = "wrong_token";
      loggedIn = r3.status === 204;
    } catch (err) {
    }
  }
  for (; ; ) {
    if (loggedIn) break;
    const s3 = await sessionState();
    if (s3 === "ok") break;
    if (s3 === "none") {
      state.phase = "login";
      changed();
      return;
    }
    state.conn = "down";
    state.phase = "app";
    state.retryAt = Date.now() + 2e3;
    changed();
    await new Promise((r3) => setTimeout(r3, 2e3));
  }
  state.conn = "connecting";
  rpc.connect();
}
window.addEventListener("hashchange", () => {
  if (/(?:^#|&)token=/.test(location.hash) && state.phase !== "app") {
    state.phase = "boot";
    state.loginReason = "";
    rpc.stopped = false;
    boot();
  }
});
async function disconnected(retryAt) {
  if (state.phase === "boot") state.phase = "app";
  state.conn = "down";
  state.retryAt = retryAt;
  changed();
  if (await sessionState() === "none") {
    rpc.stop();
    state.phase = "login";
    state.loginReason = "rotated";
    teardown();
    changed();
  }
}
async function connected() {
  state.conn = "open";
  changed();
  try {
    const [, me, friends, requests, transfers, callList, status, groupList] = await Promise.all([
      rpc.call("events.subscribe"),
      rpc.call("identity.get"),
      rpc.call("friends.list"),
      rpc.call("requests.list"),
      rpc.call("files.list"),
      rpc.call("calls.list"),
      rpc.call("status"),
      rpc.call("groups.list")
    ]);
    state.me = me;
    state.status = status;
    const contacts = {};
    for (const c3 of [...friends.contacts, ...requests.requests]) contacts[c3.peer_id] = c3;
    state.contacts = contacts;
    const tr = {};
    for (const t4 of transfers.transfers) tr[t4.id] = t4;
    state.transfers = tr;
    const groups = {};
    for (const g2 of groupList.groups) groups[g2.id] = g2;
    state.groups = groups;
    state.gconvs = {};
    if (state.selectedGroup && groups[state.selectedGroup]) loadGroupHistory(state.selectedGroup);
    const live = callList.calls.find((c3) => c3.state !== "ended" && c3.kind !== "group");
    setCall(live || null);
    const open = state.selected;
    state.convs = {};
    if (open && contacts[open]) loadHistory(open);
    state.loaded = true;
    state.phase = "app";
    changed();
  } catch (err) {
    if (!(err instanceof RpcError) || err.name_ !== "not_connected") {
      state.phase = "app";
      toast(err.message, "error");
    }
  }
}
var friendsTimer = null;
function refreshFriendsSoon() {
  clearTimeout(friendsTimer);
  friendsTimer = setTimeout(async () => {
    try {
      const { contacts } = await rpc.call("friends.list");
      for (const c3 of contacts) state.contacts[c3.peer_id] = c3;
      changed();
    } catch (err) {
    }
  }, 300);
}
async function refreshStatus() {
  try {
    state.status = await rpc.call("status");
    changed();
  } catch (err) {
  }
}
function conv(peer) {
  if (!state.convs[peer]) {
    state.convs[peer] = { messages: [], loaded: false, loading: false, done: false, error: "" };
  }
  return state.convs[peer];
}
function mergeMessages(list, incoming) {
  const byId = new Map(list.map((m3) => [m3.id + m3.direction, m3]));
  for (const m3 of incoming) byId.set(m3.id + m3.direction, { ...byId.get(m3.id + m3.direction), ...m3 });
  return [...byId.values()].sort((a3, b2) => (a3.row ?? Infinity) - (b2.row ?? Infinity) || a3.stored_at - b2.stored_at);
}
async function loadHistory(peer) {
  const c3 = conv(peer);
  if (c3.loading) return;
  c3.loading = true;
  changed();
  try {
    const { messages } = await rpc.call("messages.history", { friend: peer, limit: HISTORY_PAGE });
    c3.messages = mergeMessages(c3.messages, messages);
    c3.done = messages.length < HISTORY_PAGE;
    c3.loaded = true;
    c3.error = "";
  } catch (err) {
    c3.error = err.message;
  } finally {
    c3.loading = false;
    changed();
    markReadIfOpen(peer);
  }
}
async function loadOlder(peer) {
  const c3 = conv(peer);
  if (c3.loading || c3.done || !c3.loaded || !c3.messages.length) return;
  c3.loading = true;
  changed();
  try {
    const before = c3.messages[0].row;
    const { messages } = await rpc.call("messages.history", {
      friend: peer,
      limit: HISTORY_PAGE,
      before
    });
    c3.messages = mergeMessages(c3.messages, messages);
    c3.done = messages.length < HISTORY_PAGE;
  } catch (err) {
    c3.error = err.message;
  } finally {
    c3.loading = false;
    changed();
  }
}
var reading = /* @__PURE__ */ new Set();
var readAgain = /* @__PURE__ */ new Set();
var readTimers = /* @__PURE__ */ new Map();
var READ_DELAY_MS = 150;
function markReadSoon(peer) {
  if (readTimers.has(peer)) return;
  readTimers.set(
    peer,
    setTimeout(() => {
      readTimers.delete(peer);
      markReadIfOpen(peer);
    }, READ_DELAY_MS)
  );
}
async function markReadIfOpen(peer) {
  const contact = state.contacts[peer];
  if (!contact || !contact.unread) return;
  if (reading.has(peer)) {
    readAgain.add(peer);
    return;
  }
  if (state.view !== "chat" || state.selected !== peer) return;
  if (document.visibilityState !== "visible" || !rpc.open) return;
  if (window.matchMedia("(max-width: 700px)").matches && state.pane !== "main") return;
  reading.add(peer);
  try {
    const { contact: updated } = await rpc.call("messages.read", { friend: peer });
    state.contacts[peer] = { ...state.contacts[peer], ...updated };
    changed();
  } catch (err) {
  } finally {
    reading.delete(peer);
    if (readAgain.delete(peer)) markReadSoon(peer);
  }
}
document.addEventListener("visibilitychange", () => {
  if (state.selected) markReadIfOpen(state.selected);
});
function putContact(c3) {
  if (!c3) return;
  const old = state.contacts[c3.peer_id];
  state.contacts[c3.peer_id] = old ? { ...c3, outbox: old.outbox } : c3;
}
function setCall(call) {
  state.call = call && call.state !== "ended" ? call : null;
  onCall(call);
}
function onEvent(ev) {
  switch (ev.type) {
    case "message.received": {
      const m3 = ev.message;
      putContact(ev.contact);
      const c3 = state.convs[m3.peer_id];
      if (c3 && c3.loaded) c3.messages = mergeMessages(c3.messages, [m3]);
      changed();
      markReadSoon(m3.peer_id);
      break;
    }
    case "message.stored":
    case "message.delivered": {
      const m3 = ev.message;
      const c3 = state.convs[m3.peer_id];
      if (c3 && c3.loaded) c3.messages = mergeMessages(c3.messages, [m3]);
      refreshFriendsSoon();
      changed();
      break;
    }
    case "friend.request":
    case "friend.accepted":
    case "contact.updated":
      putContact(ev.contact);
      changed();
      break;
    case "friend.online":
    case "friend.offline":
      putContact(ev.contact);
      refreshFriendsSoon();
      refreshStatus();
      changed();
      break;
    case "friend.removed":
      delete state.contacts[ev.peer_id];
      refreshFriendsSoon();
      changed();
      break;
    case "transfer.offered":
    case "transfer.updated":
      state.transfers[ev.transfer.id] = ev.transfer;
      if (ev.transfer.state === "completed") delete state.progress[ev.transfer.id];
      if (ev.type === "transfer.offered" && !(state.view === "chat" && state.selected === ev.transfer.peer_id)) {
        const who2 = state.contacts[ev.transfer.peer_id];
        toast(`${who2 ? who2.display_name : "A friend"} offers ${ev.transfer.name}`);
      }
      changed();
      break;
    case "transfer.progress":
      state.progress[ev.id] = { bytes: ev.bytes, size: ev.size, rate: ev.rate, at: Date.now() };
      changed();
      break;
    case "call.incoming":
    case "call.updated":
    case "call.ended":
      if (ev.call.kind === "group") {
        if (ev.type === "call.incoming") {
          toast(`A group call in ${ev.call.group} rings: join it with "p2pchat answer ${ev.call.group}"`);
        }
        break;
      }
      setCall(ev.call);
      if (ev.type === "call.ended") announceEnd(ev.call);
      refreshStatus();
      changed();
      break;
    case "call.media":
      onMedia(ev);
      break;
    case "group.invited":
      state.groups[ev.group.id] = ev.group;
      toast(`You are invited to the group ${ev.group.name}`);
      changed();
      break;
    case "group.updated":
      state.groups[ev.group.id] = ev.group;
      changed();
      break;
    case "group.receipt":
      if (state.selectedGroup === ev.group) refreshReceiptsSoon(ev.group, [300]);
      break;
    case "group.message": {
      const m3 = ev.message;
      const c3 = state.gconvs[m3.group];
      if (c3 && c3.loaded) c3.messages = mergeGroupMessages(c3.messages, [m3]);
      changed();
      break;
    }
    default:
      break;
  }
}
var REASONS = {
  hangup: "hung up",
  declined: "declined",
  busy: "busy",
  timeout: "no answer",
  failed: "the connection failed",
  glare: "you both called at once",
  unavailable: "unavailable"
};
function announceEnd(call) {
  const who2 = state.contacts[call.peer_id];
  const name = who2 ? who2.display_name : "your friend";
  const reason = REASONS[call.reason] || call.reason || "ended";
  const by = call.reason === "hangup" ? call.ended_by === "you" ? "you hung up" : `${name} hung up` : reason;
  toast(`Call with ${name} ended: ${by}`);
}
function openChat(peer) {
  state.selected = peer;
  state.selectedGroup = null;
  state.view = "chat";
  state.pane = "main";
  const c3 = conv(peer);
  if (!c3.loaded && !c3.loading) loadHistory(peer);
  changed();
  markReadIfOpen(peer);
}
function openView(view) {
  state.view = view;
  state.pane = "main";
  if (view !== "chat") state.selected = null;
  if (view !== "group") state.selectedGroup = null;
  if (view === "status") refreshStatus();
  changed();
}
function back() {
  state.pane = "list";
  changed();
}
var RESEND_FOR_MS = 6e4;
async function sendMessage(peer, text) {
  const id = randomHex();
  const deadline = Date.now() + RESEND_FOR_MS;
  let message;
  for (; ; ) {
    try {
      message = await rpc.call("messages.send", { friend: peer, text, id });
      break;
    } catch (err) {
      if (err.name_ !== "not_connected" || Date.now() >= deadline) throw err;
      await rpc.whenOpen(deadline - Date.now());
    }
  }
  const c3 = conv(peer);
  if (c3.loaded) c3.messages = mergeMessages(c3.messages, [message.message]);
  refreshFriendsSoon();
  changed();
}
async function addFriend() {
  const a3 = state.add;
  const id = a3.id.trim();
  if (!id) {
    a3.error = "Paste your friend's ID or friend code.";
    changed();
    return;
  }
  a3.busy = true;
  a3.error = "";
  changed();
  try {
    const params = { id };
    if (a3.name.trim()) params.name = a3.name.trim();
    if (a3.message.trim()) params.message = a3.message.trim();
    const { contact } = await rpc.call("friends.add", params);
    state.contacts[contact.peer_id] = { ...state.contacts[contact.peer_id], ...contact };
    state.add = { id: "", name: "", message: "", error: "", busy: false };
    if (contact.state === "friend") {
      toast(`${contact.display_name} is your friend now`);
      openChat(contact.peer_id);
    } else {
      toast(`Friend request sent to ${contact.display_name}`);
    }
  } catch (err) {
    a3.error = err.message;
  } finally {
    a3.busy = false;
    changed();
  }
}
async function acceptRequest(peer) {
  try {
    const { contact } = await rpc.call("requests.accept", { friend: peer });
    putContact(contact);
    refreshFriendsSoon();
    changed();
  } catch (err) {
    toast(err.message, "error");
  }
}
async function declineRequest(peer) {
  try {
    await rpc.call("requests.decline", { friend: peer });
    delete state.contacts[peer];
    changed();
  } catch (err) {
    toast(err.message, "error");
  }
}
async function transferAction(method, id) {
  try {
    const { transfer } = await rpc.call(method, { id });
    state.transfers[transfer.id] = transfer;
    changed();
  } catch (err) {
    toast(err.message, "error");
  }
}
function gconv(id) {
  if (!state.gconvs[id]) state.gconvs[id] = { messages: [], loaded: false, loading: false, error: "" };
  return state.gconvs[id];
}
function mergeGroupMessages(list, incoming) {
  const byKey = new Map(list.map((m3) => [`${m3.sender}/${m3.seq}`, m3]));
  for (const m3 of incoming) byKey.set(`${m3.sender}/${m3.seq}`, m3);
  return [...byKey.values()].sort(
    (a3, b2) => a3.clock - b2.clock || (a3.sender < b2.sender ? -1 : a3.sender > b2.sender ? 1 : 0) || a3.seq - b2.seq
  );
}
async function loadGroupHistory(id) {
  const c3 = gconv(id);
  if (c3.loading) return;
  c3.loading = true;
  changed();
  try {
    const { messages } = await rpc.call("groups.history", { group: id, limit: 200 });
    c3.messages = mergeGroupMessages(c3.messages, messages);
    c3.loaded = true;
    c3.error = "";
  } catch (err) {
    c3.error = err.message;
  } finally {
    c3.loading = false;
    changed();
  }
}
function openGroup(id) {
  state.selectedGroup = id;
  state.selected = null;
  state.view = "group";
  state.pane = "main";
  const c3 = gconv(id);
  if (!c3.loaded && !c3.loading) loadGroupHistory(id);
  changed();
}
var receiptsTimer = null;
function refreshReceiptsSoon(id, delays = [400]) {
  clearTimeout(receiptsTimer);
  const [first, ...rest] = delays;
  if (first === void 0) return;
  receiptsTimer = setTimeout(() => {
    if (state.selectedGroup !== id) return;
    loadGroupHistory(id);
    refreshReceiptsSoon(id, rest);
  }, first);
}
async function sendGroupMessage(id, text) {
  const { message } = await rpc.call("groups.send", { group: id, text });
  const c3 = gconv(id);
  if (c3.loaded) c3.messages = mergeGroupMessages(c3.messages, [message]);
  changed();
  refreshReceiptsSoon(id);
}
async function createGroup() {
  const g2 = state.newGroup;
  const name = g2.name.trim();
  if (!name) {
    g2.error = "Give the group a name.";
    changed();
    return;
  }
  g2.busy = true;
  g2.error = "";
  changed();
  try {
    const { group } = await rpc.call("groups.create", { name });
    state.groups[group.id] = group;
    state.newGroup = { name: "", error: "", busy: false };
    openGroup(group.id);
  } catch (err) {
    g2.error = err.message;
  } finally {
    g2.busy = false;
    changed();
  }
}
async function groupAction(method, params) {
  try {
    const { group } = await rpc.call(method, params);
    state.groups[group.id] = group;
    if (method === "groups.join") openGroup(group.id);
    changed();
    return true;
  } catch (err) {
    toast(err.message, "error");
    return false;
  }
}
var uploadSeq = 0;
function sendFiles(peer, files) {
  for (const file of files) upload(peer, file);
}
function upload(peer, file) {
  const key = `u${++uploadSeq}`;
  const entry = { key, friend: peer, name: file.name, loaded: 0, total: file.size, error: "" };
  state.uploads[key] = entry;
  changed();
  const xhr = new XMLHttpRequest();
  const q2 = new URLSearchParams({ friend: peer, name: file.name });
  xhr.open("POST", `/api/files?${q2}`);
  xhr.responseType = "json";
  xhr.upload.onprogress = (e3) => {
    entry.loaded = e3.loaded;
    if (e3.lengthComputable) entry.total = e3.total;
    changed();
  };
  const done = () => {
    delete state.uploads[key];
    changed();
  };
  xhr.onload = () => {
    const body = xhr.response || {};
    if (xhr.status === 200 && body.transfer) {
      state.transfers[body.transfer.id] = body.transfer;
      done();
    } else {
      const msg = body.error && body.error.message || `upload failed (HTTP ${xhr.status})`;
      toast(`${file.name}: ${msg}`, "error", 8e3);
      done();
    }
  };
  xhr.onerror = () => {
    toast(`${file.name}: the daemon is not reachable`, "error", 8e3);
    done();
  };
  xhr.send(file);
}
async function copy(what, text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (err) {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  state.copied = what;
  changed();
  setTimeout(() => {
    if (state.copied === what) {
      state.copied = "";
      changed();
    }
  }, 1500);
}

// app/vendor/hooks.module.js
var t3;
var r2;
var u2;
var i2;
var o2 = 0;
var f2 = [];
var c2 = l;
var e2 = c2.__b;
var a2 = c2.__r;
var v2 = c2.diffed;
var l2 = c2.__c;
var m2 = c2.unmount;
var p2 = c2.__;
function s2(n3, t4) {
  c2.__h && c2.__h(r2, n3, o2 || t4), o2 = 0;
  var u3 = r2.__H || (r2.__H = { __: [], __h: [] });
  return n3 >= u3.__.length && u3.__.push({}), u3.__[n3];
}
function d2(n3) {
  return o2 = 1, y2(D2, n3);
}
function y2(n3, u3, i3) {
  var o3 = s2(t3++, 2);
  if (o3.t = n3, !o3.__c && (o3.__ = [i3 ? i3(u3) : D2(void 0, u3), function(n4) {
    var t4 = o3.__N ? o3.__N[0] : o3.__[0], r3 = o3.t(t4, n4);
    t4 !== r3 && (o3.__N = [r3, o3.__[1]], o3.__c.setState({}));
  }], o3.__c = r2, !r2.__f)) {
    var f3 = function(n4, t4, r3) {
      if (!o3.__c.__H) return true;
      var u4 = false, i4 = o3.__c.props !== n4;
      if (o3.__c.__H.__.some(function(n5) {
        if (n5.__N) {
          u4 = true;
          var t5 = n5.__[0];
          n5.__ = n5.__N, n5.__N = void 0, t5 !== n5.__[0] && (i4 = true);
        }
      }), c3) {
        var f4 = c3.call(this, n4, t4, r3);
        return u4 ? f4 || i4 : f4;
      }
      return !u4 || i4;
    };
    r2.__f = true;
    var c3 = r2.shouldComponentUpdate, e3 = r2.componentWillUpdate;
    r2.componentWillUpdate = function(n4, t4, r3) {
      if (this.__e) {
        var u4 = c3;
        c3 = void 0, f3(n4, t4, r3), c3 = u4;
      }
      e3 && e3.call(this, n4, t4, r3);
    }, r2.shouldComponentUpdate = f3;
  }
  return o3.__N || o3.__;
}
function h2(n3, u3) {
  var i3 = s2(t3++, 3);
  !c2.__s && C2(i3.__H, u3) && (i3.__ = n3, i3.u = u3, r2.__H.__h.push(i3));
}
function _2(n3, u3) {
  var i3 = s2(t3++, 4);
  !c2.__s && C2(i3.__H, u3) && (i3.__ = n3, i3.u = u3, r2.__h.push(i3));
}
function A2(n3) {
  return o2 = 5, T2(function() {
    return { current: n3 };
  }, []);
}
function T2(n3, r3) {
  var u3 = s2(t3++, 7);
  return C2(u3.__H, r3) && (u3.__ = n3(), u3.__H = r3, u3.__h = n3), u3.__;
}
function j2() {
  for (var n3; n3 = f2.shift(); ) {
    var t4 = n3.__H;
    if (n3.__P && t4) try {
      t4.__h.some(z2), t4.__h.some(B2), t4.__h = [];
    } catch (r3) {
      t4.__h = [], c2.__e(r3, n3.__v);
    }
  }
}
c2.__b = function(n3) {
  r2 = null, e2 && e2(n3);
}, c2.__ = function(n3, t4) {
  n3 && t4.__k && t4.__k.__m && (n3.__m = t4.__k.__m), p2 && p2(n3, t4);
}, c2.__r = function(n3) {
  a2 && a2(n3), t3 = 0;
  var i3 = (r2 = n3.__c).__H;
  i3 && (u2 === r2 ? (i3.__h = [], r2.__h = [], i3.__.some(function(n4) {
    n4.__N && (n4.__ = n4.__N), n4.u = n4.__N = void 0;
  })) : (i3.__h.some(z2), i3.__h.some(B2), i3.__h = [], t3 = 0)), u2 = r2;
}, c2.diffed = function(n3) {
  v2 && v2(n3);
  var t4 = n3.__c;
  t4 && t4.__H && (t4.__H.__h.length && (1 !== f2.push(t4) && i2 === c2.requestAnimationFrame || ((i2 = c2.requestAnimationFrame) || w2)(j2)), t4.__H.__.some(function(n4) {
    n4.u && (n4.__H = n4.u, n4.u = void 0);
  })), u2 = r2 = null;
}, c2.__c = function(n3, t4) {
  t4.some(function(n4) {
    try {
      n4.__h.some(z2), n4.__h = n4.__h.filter(function(n5) {
        return !n5.__ || B2(n5);
      });
    } catch (r3) {
      t4.some(function(n5) {
        n5.__h && (n5.__h = []);
      }), t4 = [], c2.__e(r3, n4.__v);
    }
  }), l2 && l2(n3, t4);
}, c2.unmount = function(n3) {
  m2 && m2(n3);
  var t4, r3 = n3.__c;
  r3 && r3.__H && (r3.__H.__.some(function(n4) {
    try {
      z2(n4);
    } catch (n5) {
      t4 = n5;
    }
  }), r3.__H = void 0, t4 && c2.__e(t4, r3.__v));
};
var k2 = "function" == typeof requestAnimationFrame;
function w2(n3) {
  var t4, r3 = function() {
    clearTimeout(u3), k2 && cancelAnimationFrame(t4), setTimeout(n3);
  }, u3 = setTimeout(r3, 35);
  k2 && (t4 = requestAnimationFrame(r3));
}
function z2(n3) {
  var t4 = r2, u3 = n3.__c;
  "function" == typeof u3 && (n3.__c = void 0, u3()), r2 = t4;
}
function B2(n3) {
  var t4 = r2;
  n3.__c = n3.__(), r2 = t4;
}
function C2(n3, t4) {
  return !n3 || n3.length !== t4.length || t4.some(function(t5, r3) {
    return t5 !== n3[r3];
  });
}
function D2(n3, t4) {
  return "function" == typeof t4 ? t4(n3) : t4;
}

// app/ui/icons.js
var paths = {
  plus: html`<path d="M12 5v14M5 12h14" />`,
  x: html`<path d="M6 6l12 12M18 6L6 18" />`,
  check: html`<path d="M5 12.5l4.5 4.5L19 7.5" />`,
  checks: html`<path d="M2 12.5l4.5 4.5L16 7.5M11.5 16l1 1L22 7.5" />`,
  clock: html`<circle cx="12" cy="12" r="8.5" /><path d="M12 7.5V12l3 2" />`,
  back: html`<path d="M15 18l-6-6 6-6" />`,
  copy: html`<rect x="9" y="9" width="11" height="11" rx="2" /><path d="M5 15H4.5A1.5 1.5 0 0 1 3 13.5v-9A1.5 1.5 0 0 1 4.5 3h9A1.5 1.5 0 0 1 15 4.5V5" />`,
  send: html`<path d="M4 12L20 4l-5 16-3.5-6.5z M11.5 13.5L20 4" />`,
  clip: html`<path d="M20 11.5l-8 8a5 5 0 0 1-7-7l8.5-8.5a3.3 3.3 0 0 1 4.7 4.7l-8.4 8.4a1.7 1.7 0 0 1-2.4-2.4L15 7" />`,
  phone: html`<path d="M5.5 3.5h3l1.8 4.6-2.1 1.4a11 11 0 0 0 6.3 6.3l1.4-2.1 4.6 1.8v3a2 2 0 0 1-2 2A16.5 16.5 0 0 1 3.5 5.5a2 2 0 0 1 2-2z" />`,
  hangup: html`<g transform="rotate(135 12 12)"><path d="M5.5 3.5h3l1.8 4.6-2.1 1.4a11 11 0 0 0 6.3 6.3l1.4-2.1 4.6 1.8v3a2 2 0 0 1-2 2A16.5 16.5 0 0 1 3.5 5.5a2 2 0 0 1 2-2z" /></g>`,
  video: html`<rect x="2.5" y="6" width="13" height="12" rx="2" /><path d="M15.5 10.5l6-3.5v10l-6-3.5z" />`,
  videoOff: html`<rect x="2.5" y="6" width="13" height="12" rx="2" /><path d="M15.5 10.5l6-3.5v10l-6-3.5zM3 3l18 18" />`,
  mic: html`<rect x="9" y="2.5" width="6" height="12" rx="3" /><path d="M5.5 11a6.5 6.5 0 0 0 13 0M12 17.5v4M8.5 21.5h7" />`,
  micOff: html`<rect x="9" y="2.5" width="6" height="12" rx="3" /><path d="M5.5 11a6.5 6.5 0 0 0 13 0M12 17.5v4M8.5 21.5h7M3 3l18 18" />`,
  download: html`<path d="M12 3.5v12M7 10.5l5 5 5-5M4 20.5h16" />`,
  file: html`<path d="M14 3H6.5A1.5 1.5 0 0 0 5 4.5v15A1.5 1.5 0 0 0 6.5 21h11a1.5 1.5 0 0 0 1.5-1.5V8zM14 3v5h5" />`,
  activity: html`<path d="M2.5 12h4l3-8 5 16 3-8h4" />`,
  userPlus: html`<circle cx="9" cy="8" r="4" /><path d="M2 20.5a7 7 0 0 1 14 0M19 8v6M16 11h6" />`
};
function Icon({ name, cls = "" }) {
  return html`<svg class=${`icon ${cls}`} viewBox="0 0 24 24" aria-hidden="true" focusable="false"
    fill="none" stroke="currentColor" stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round"
  >${paths[name] || null}</svg>`;
}

// app/ui/sidebar.js
function Avatar({ contact, size = "" }) {
  const online = contact.state === "friend" && contact.online;
  return html`<span class=${`avatar ${hue(contact.peer_id)} ${size}`}>
    ${initial(contact.display_name)}
    ${contact.state === "friend" && html`<span class=${`presence ${online ? "on" : "off"}`} title=${online ? "online" : "offline"}></span>`}
  </span>`;
}
function offersFrom(peer) {
  return Object.values(state.transfers).filter(
    (t4) => t4.peer_id === peer && t4.direction === "in" && t4.state === "offered"
  ).length;
}
function ContactRow({ contact }) {
  const selected = state.view === "chat" && state.selected === contact.peer_id;
  const offers = offersFrom(contact.peer_id);
  let sub;
  if (contact.state === "outgoing") sub = "request sent · waiting";
  else if (contact.state === "blocked") sub = "blocked";
  else sub = contact.online ? "online" : "offline";
  return html`<li>
    <button
      class=${`contact ${selected ? "selected" : ""}`}
      data-testid="contact"
      data-peer=${contact.peer_id}
      onClick=${() => openChat(contact.peer_id)}
    >
      <${Avatar} contact=${contact} />
      <span class="contact-text">
        <span class="contact-name">${contact.display_name}</span>
        <span class=${`contact-sub ${contact.online ? "is-online" : ""}`}>${sub}</span>
      </span>
      <span class="badges">
        ${offers > 0 && html`<span class="badge file" title=${`${offers} file offer(s)`}><${Icon} name="file" /></span>`}
        ${contact.outbox > 0 && html`<span class="badge queued" data-testid="outbox" title="messages not yet delivered"
          >${contact.outbox} queued</span
        >`}
        ${contact.unread > 0 && html`<span class="badge unread" data-testid="unread" title="unread messages"
          >${contact.unread}</span
        >`}
      </span>
    </button>
  </li>`;
}
function RequestRow({ contact }) {
  const who2 = contact.their_name || contact.display_name;
  return html`<li class="request" data-testid="request" data-peer=${contact.peer_id}>
    <div class="request-head">
      <${Avatar} contact=${contact} />
      <span class="contact-text">
        <span class="contact-name">${who2}</span>
        <span class="contact-sub mono" title=${contact.peer_id}>${shortId(contact.peer_id)}</span>
      </span>
    </div>
    ${contact.request_text && html`<p class="request-text">“${contact.request_text}”</p>`}
    <div class="row-actions">
      <button class="btn primary small" data-testid="accept-request" onClick=${() => acceptRequest(contact.peer_id)}>
        Accept
      </button>
      <button class="btn small" data-testid="decline-request" onClick=${() => declineRequest(contact.peer_id)}>
        Decline
      </button>
    </div>
  </li>`;
}
function GroupRow({ g: g2 }) {
  const selected = state.view === "group" && state.selectedGroup === g2.id;
  const online = g2.members.filter((m3) => m3.online && !m3.me).length;
  const sub = g2.status === "joined" ? `${plural(g2.members.length, "member")} · ${online} online` : g2.status;
  return html`<li>
    <button class=${`contact ${selected ? "selected" : ""}`} data-testid="group-row" data-group=${g2.id} onClick=${() => openGroup(g2.id)}>
      <span class=${`avatar ${hue(g2.id)}`}>${initial(g2.name)}</span>
      <span class="contact-text">
        <span class="contact-name">${g2.name}</span>
        <span class="contact-sub">${sub}</span>
      </span>
      ${g2.status === "invited" && html`<span class="badges"><span class="badge unread" data-testid="group-invited">invited</span></span>`}
    </button>
  </li>`;
}
function NewGroup() {
  const g2 = state.newGroup;
  return html`<form class="new-group" onSubmit=${(e3) => {
    e3.preventDefault();
    createGroup();
  }}>
    <input class="input" data-testid="new-group-name" placeholder="New group name" value=${g2.name} maxlength="128"
      onInput=${(e3) => {
    g2.name = e3.currentTarget.value;
    changed();
  }} />
    <button class="btn small primary" data-testid="new-group-submit" disabled=${g2.busy}>Create</button>
    ${g2.error && html`<p class="field-error" data-testid="new-group-error">${g2.error}</p>`}
  </form>`;
}
function byName(a3, b2) {
  if (a3.online !== b2.online) return a3.online ? -1 : 1;
  return a3.display_name.localeCompare(b2.display_name);
}
function Sidebar() {
  const all = Object.values(state.contacts);
  const requests = all.filter((c3) => c3.state === "incoming").sort(byName);
  const friends = all.filter((c3) => c3.state === "friend").sort(byName);
  const outgoing = all.filter((c3) => c3.state === "outgoing").sort(byName);
  const s3 = state.status;
  return html`<aside class="sidebar" aria-label="Friends">
    <header class="brand">
      <span class="logo" aria-hidden="true">p2p</span>
      <span class="brand-name">p2pchat</span>
      <span class=${`conn-dot ${state.conn}`} title=${state.conn === "open" ? "connected to your daemon" : "daemon not reachable"}></span>
    </header>
    <nav class="nav">
      <button class=${`nav-btn ${state.view === "home" ? "active" : ""}`} data-testid="nav-home" onClick=${() => openView("home")}>
        <${Icon} name="userPlus" /> <span>Add friend<span class="wide-only"> · my code</span></span>
      </button>
      <button class=${`nav-btn ${state.view === "status" ? "active" : ""}`} data-testid="nav-status" onClick=${() => openView("status")}>
        <${Icon} name="activity" /> Status
      </button>
    </nav>
    <div class="lists">
      ${requests.length > 0 && html`<section class="group" data-testid="requests">
        <h2 class="group-title">Friend requests <span class="count">${requests.length}</span></h2>
        <ul class="plain">${requests.map((c3) => html`<${RequestRow} key=${c3.peer_id} contact=${c3} />`)}</ul>
      </section>`}
      <section class="group" data-testid="friends">
        <h2 class="group-title">Friends <span class="count">${friends.length}</span></h2>
        ${friends.length === 0 && html`<p class="empty">No friends yet. Share your friend code, or add theirs.</p>`}
        <ul class="plain">${friends.map((c3) => html`<${ContactRow} key=${c3.peer_id} contact=${c3} />`)}</ul>
      </section>
      <section class="group" data-testid="groups">
        <h2 class="group-title">Groups <span class="count">${Object.keys(state.groups).length}</span></h2>
        <ul class="plain">${Object.values(state.groups).filter((g2) => g2.status === "joined" || g2.status === "invited").sort((a3, b2) => a3.status === b2.status ? a3.name.localeCompare(b2.name) : a3.status === "invited" ? -1 : 1).map((g2) => html`<${GroupRow} key=${g2.id} g=${g2} />`)}</ul>
        <${NewGroup} />
      </section>
      ${outgoing.length > 0 && html`<section class="group">
        <h2 class="group-title">Waiting for them <span class="count">${outgoing.length}</span></h2>
        <ul class="plain">${outgoing.map((c3) => html`<${ContactRow} key=${c3.peer_id} contact=${c3} />`)}</ul>
      </section>`}
    </div>
    ${s3 && html`<footer class="side-foot" data-testid="side-status">
      ${`${s3.reachability || "?"} · ${plural(s3.dht_peers, "DHT peer")} · ${s3.connections} connected`}
    </footer>`}
  </aside>`;
}

// app/ui/panels.js
function CopyButton({ what, text, label }) {
  const done = state.copied === what;
  return html`<button class="btn small copy" data-testid=${`copy-${what}`} onClick=${() => copy(what, text)}
    aria-label=${`Copy ${label}`}>
    <${Icon} name=${done ? "check" : "copy"} /> ${done ? "Copied" : "Copy"}
  </button>`;
}
function PaneHeader({ title }) {
  return html`<header class="pane-head">
    <button class="icon-btn back" aria-label="Back to the list" onClick=${back}><${Icon} name="back" /></button>
    <h1 class="pane-title">${title}</h1>
  </header>`;
}
function AddFriend() {
  const a3 = state.add;
  const set = (field) => (e3) => {
    a3[field] = e3.currentTarget.value;
    if (field === "id") a3.error = "";
    changed();
  };
  const submit = (e3) => {
    e3.preventDefault();
    addFriend();
  };
  return html`<section class="card" aria-labelledby="add-title">
    <h2 id="add-title" class="card-title">Add a friend</h2>
    <p class="hint">Paste the ID (<span class="mono">12D3KooW…</span>) or the friend code
      (<span class="mono">p2pchat:…</span>) your friend sent you. A typo is caught by its checksum.</p>
    <form class="form" onSubmit=${submit} novalidate>
      <label class="field">
        <span class="label">ID or friend code</span>
        <textarea class=${`input mono ${a3.error ? "invalid" : ""}`} rows="2" data-testid="add-id"
          value=${a3.id} onInput=${set("id")} spellcheck="false" autocomplete="off" autocapitalize="off"
          aria-invalid=${a3.error ? "true" : "false"} aria-describedby="add-error"
          placeholder="p2pchat:…"></textarea>
        ${a3.error && html`<span id="add-error" class="field-error" role="alert" data-testid="add-error">${a3.error}</span>`}
      </label>
      <div class="field-row">
        <label class="field">
          <span class="label">Name (optional)</span>
          <input class="input" data-testid="add-name" value=${a3.name} onInput=${set("name")} maxlength="64" placeholder="what you call them" />
        </label>
        <label class="field">
          <span class="label">Message (optional)</span>
          <input class="input" data-testid="add-message" value=${a3.message} onInput=${set("message")} maxlength="500" placeholder="hi, it's me" />
        </label>
      </div>
      <button class="btn primary" type="submit" data-testid="add-submit" disabled=${a3.busy}>
        <${Icon} name="userPlus" /> ${a3.busy ? "Sending…" : "Send friend request"}
      </button>
    </form>
  </section>`;
}
function Identity() {
  const me = state.me;
  if (!me) return html`<section class="card"><p class="hint">Loading…</p></section>`;
  return html`<section class="card identity" aria-labelledby="me-title">
    <h2 id="me-title" class="card-title">You</h2>
    <div class="identity-grid">
      <div class="identity-text">
        <div class="kv">
          <div class="kv-head"><span class="label">Your ID</span><${CopyButton} what="id" text=${me.peer_id} label="your ID" /></div>
          <code class="mono break" data-testid="my-id">${me.peer_id}</code>
        </div>
        <div class="kv">
          <div class="kv-head"><span class="label">Your friend code</span><${CopyButton} what="code" text=${me.friend_code} label="your friend code" /></div>
          <code class="mono break code-box" data-testid="my-code">${me.friend_code}</code>
          <p class="hint">Send this to a friend: it is your ID plus a checksum and where to reach you.</p>
        </div>
      </div>
      <figure class="qr">
        <img src="/api/friend-code.svg" alt="QR code of your friend code" data-testid="qr" width="180" height="180" />
        <figcaption class="hint">Scan to get the friend code</figcaption>
      </figure>
    </div>
  </section>`;
}
function Home() {
  return html`<main class="pane home" data-testid="home">
    <${PaneHeader} title="Add friend · my code" />
    <div class="pane-body scroll">
      <${Identity} />
      <${AddFriend} />
    </div>
  </main>`;
}
function Row({ k: k3, v: v3, testid }) {
  return html`<div class="stat-row" data-testid=${testid}><dt>${k3}</dt><dd>${v3}</dd></div>`;
}
function Status() {
  h2(() => {
    const t4 = setInterval(refreshStatus, 3e3);
    return () => clearInterval(t4);
  }, []);
  const s3 = state.status;
  const list = (xs) => xs && xs.length ? html`<ul class="plain mono small">${xs.map((x2) => html`<li key=${x2} class="break">${x2}</li>`)}</ul>` : "none";
  return html`<main class="pane status" data-testid="status">
    <${PaneHeader} title="Status" />
    <div class="pane-body scroll">
      ${!s3 && html`<section class="card"><p class="hint">Loading…</p></section>`}
      ${s3 && html`<section class="card">
        <h2 class="card-title">Network</h2>
        <dl class="stats">
          <${Row} k="Reachability" testid="st-reachability" v=${html`<span class=${`pill ${s3.reachability}`}>${s3.reachability}</span> ${s3.reachability === "private" ? "(behind a NAT: reachable through relays)" : ""}`} />
          <${Row} k="DHT" testid="st-dht" v=${`${plural(s3.dht_peers, "peer")} · ${s3.dht_mode} mode`} />
          <${Row} k="Connections" testid="st-connections" v=${String(s3.connections)} />
          <${Row} k="Relays" testid="st-relays" v=${list(s3.relays)} />
          <${Row} k="Relay for others" v=${typeof s3.relay_service === "boolean" ? s3.relay_service ? "yes" : "no" : String(s3.relay_service)} />
          <${Row} k="LAN discovery" v=${s3.mdns ? "on" : "off"} />
          <${Row} k="Public IPs" v=${list(s3.public_ips)} />
          <${Row} k="Listening on" v=${list(s3.listen_addrs)} />
        </dl>
      </section>
      <section class="card">
        <h2 class="card-title">This daemon</h2>
        <dl class="stats">
          <${Row} k="Friends" v=${`${s3.friends_online} of ${s3.friends} online`} />
          <${Row} k="Requests" v=${String(s3.pending_requests)} />
          <${Row} k="Queued messages" v=${String(s3.outbox)} />
          <${Row} k="Active transfers" v=${String(s3.transfers_active)} />
          <${Row} k="Web app" testid="st-web" v=${html`<span class="mono break">${s3.web_url || "off"}</span>`} />
          <${Row} k="Version" v=${`${s3.version} · up ${duration(s3.uptime_s)}`} />
          <${Row} k="Data directory" v=${html`<span class="mono break">${s3.home}</span>`} />
        </dl>
      </section>`}
    </div>
  </main>`;
}

// app/ui/chat.js
var LIVE = /* @__PURE__ */ new Set(["offering", "offered", "active"]);
function Header({ contact }) {
  const call = state.call;
  const ringingHere = call && call.state === "ringing_in" && call.peer_id === contact.peer_id;
  const busy = !!(call || state.media);
  const canCall = contact.state === "friend";
  let sub = contact.online ? "online" : "offline";
  if (contact.state === "outgoing") sub = "request sent: you can chat once they accept";
  return html`<header class="pane-head chat-head">
    <button class="icon-btn back" aria-label="Back to the list" onClick=${back}><${Icon} name="back" /></button>
    <${Avatar} contact=${contact} />
    <div class="chat-title">
      <h1 class="pane-title" data-testid="chat-name">${contact.display_name}</h1>
      <span class=${`contact-sub ${contact.online ? "is-online" : ""}`} title=${contact.peer_id}>${sub} · <span class="mono">${shortId(contact.peer_id)}</span></span>
    </div>
    <div class="head-actions">
      ${ringingHere ? html`<button class="btn primary small" onClick=${answer}><${Icon} name="phone" /> Answer</button>` : html`
          <button class="icon-btn" data-testid="call-audio" aria-label="Audio call" title="Audio call"
            disabled=${!canCall || busy} onClick=${() => startCall(contact.peer_id, false)}><${Icon} name="phone" /></button>
          <button class="icon-btn" data-testid="call-video" aria-label="Video call" title="Video call"
            disabled=${!canCall || busy} onClick=${() => startCall(contact.peer_id, true)}><${Icon} name="video" /></button>`}
    </div>
  </header>`;
}
function MessageState({ m: m3 }) {
  if (m3.direction !== "out") return null;
  if (m3.state === "delivered") {
    return html`<span class="msg-state delivered" data-testid="msg-state" data-state="delivered" title=${`delivered ${m3.delivered_at ? time(m3.delivered_at) : ""}`}>
      <${Icon} name="checks" /><span class="sr">delivered</span></span>`;
  }
  if (m3.holders > 0) {
    const where = m3.holders === 1 ? "1 holder" : `${m3.holders} holders`;
    return html`<span class="msg-state stored" data-testid="msg-state" data-state="stored" title=${`stored for delivery at ${where}: your friend gets it when back online, even if you are not`}>
      <${Icon} name="clock" /><span class="stored-label">stored for delivery · ${where}</span></span>`;
  }
  return html`<span class="msg-state pending" data-testid="msg-state" data-state="pending" title="not yet delivered: waits in your daemon's outbox">
    <${Icon} name="clock" /><span class="sr">pending</span></span>`;
}
var Message = class extends C {
  shouldComponentUpdate(next) {
    return next.m !== this.props.m;
  }
  render({ m: m3 }) {
    return html`<li class=${`msg ${m3.direction}`} data-testid="message" data-id=${m3.id} data-state=${m3.state} data-direction=${m3.direction}>
    <div class="bubble">
      <p class="msg-text" data-testid="msg-text">${m3.text}</p>
      <span class="msg-meta">${time(m3.sent_at)} <${MessageState} m=${m3} /></span>
    </div>
  </li>`;
  }
};
function Progress({ done, total }) {
  const pct = total > 0 ? Math.min(100, 100 * done / total) : 0;
  return html`<div class="progress" role="progressbar" aria-valuemin="0" aria-valuemax="100"
    aria-valuenow=${Math.round(pct)} data-testid="progress">
    <div class="progress-bar" style=${{ width: `${pct.toFixed(1)}%` }}></div>
  </div>`;
}
var STATE_TEXT = {
  offering: "reaching your friend…",
  offered: "waiting for an answer",
  active: "transferring",
  completed: "done",
  declined: "declined",
  cancelled: "cancelled",
  failed: "failed"
};
function TransferCard({ t: t4 }) {
  const p3 = state.progress[t4.id];
  const live = LIVE.has(t4.state);
  const done = p3 ? p3.bytes : t4.state === "completed" ? t4.size : t4.bytes;
  const ratePerSec = p3 ? p3.rate : 0;
  const left = ratePerSec > 0 ? (t4.size - done) / ratePerSec : null;
  let text = STATE_TEXT[t4.state] || t4.state;
  if (t4.direction === "in" && t4.state === "offered") text = "offered to you";
  return html`<li class=${`msg ${t4.direction} file-item`} data-testid="transfer" data-id=${t4.id} data-state=${t4.state}>
    <div class=${`bubble file-card ${t4.state}`}>
      <div class="file-head">
        <span class="file-icon"><${Icon} name="file" /></span>
        <span class="file-name break" data-testid="transfer-name" title=${t4.name}>${t4.name}</span>
        <span class="file-size">${bytes(t4.size)}</span>
      </div>
      ${t4.state === "active" && html`<${Progress} done=${done} total=${t4.size} />`}
      <div class="file-status">
        <span data-testid="transfer-state">${text}</span>
        ${t4.state === "active" && html`<span class="file-rate" data-testid="transfer-rate">${bytes(done)} of ${bytes(t4.size)}${ratePerSec > 0 ? ` · ${rate(ratePerSec)}` : ""}${left != null ? ` · ${duration(left)} left` : ""}</span>`}
        ${t4.error && t4.state !== "completed" && html`<span class="file-error">${t4.error}</span>`}
        ${t4.data_path && t4.state === "completed" && html`<span class="file-path" title="how the bytes flowed">${t4.data_path === "tcp" ? "direct" : "in-stream"}</span>`}
      </div>
      <div class="row-actions">
        ${t4.direction === "in" && t4.state === "offered" && html`<button class="btn primary small" data-testid="transfer-accept" onClick=${() => transferAction("files.accept", t4.id)}>Accept</button>
          <button class="btn small" data-testid="transfer-decline" onClick=${() => transferAction("files.decline", t4.id)}>Decline</button>`}
        ${live && !(t4.direction === "in" && t4.state === "offered") && html`<button class="btn small" data-testid="transfer-cancel" onClick=${() => transferAction("files.cancel", t4.id)}>Cancel</button>`}
        ${t4.direction === "in" && t4.state === "completed" && html`<a class="btn primary small" data-testid="transfer-download" href=${`/api/files/${t4.id}/download`} download=${t4.name}>
          <${Icon} name="download" /> Download</a>`}
      </div>
      <span class="msg-meta">${time(t4.created_at)}</span>
    </div>
  </li>`;
}
function UploadCard({ u: u3 }) {
  return html`<li class="msg out file-item" data-testid="upload">
    <div class="bubble file-card">
      <div class="file-head">
        <span class="file-icon"><${Icon} name="file" /></span>
        <span class="file-name break">${u3.name}</span>
        <span class="file-size">${bytes(u3.total)}</span>
      </div>
      <${Progress} done=${u3.loaded} total=${u3.total} />
      <div class="file-status"><span>handing it to your daemon… ${u3.total ? Math.floor(100 * u3.loaded / u3.total) : 0}%</span></div>
    </div>
  </li>`;
}
function timeline(peer) {
  const conv2 = state.convs[peer] || { messages: [], done: false };
  const msgs = conv2.messages;
  const oldest = msgs.length ? msgs[0].stored_at : Infinity;
  const files = Object.values(state.transfers).filter(
    (t4) => t4.peer_id === peer && (conv2.done || t4.created_at >= oldest)
  );
  const items = [
    ...msgs.map((m3) => ({ key: `m${m3.id}${m3.direction}`, at: m3.stored_at, m: m3 })),
    ...files.map((t4) => ({ key: `t${t4.id}`, at: t4.created_at, t: t4 }))
  ].sort((a3, b2) => a3.at - b2.at);
  const out = [];
  let lastDay = "";
  for (const it of items) {
    const d3 = dayKey(it.at);
    if (d3 !== lastDay) {
      out.push({ key: `d${d3}`, day: day(it.at) });
      lastDay = d3;
    }
    out.push(it);
  }
  for (const u3 of Object.values(state.uploads)) if (u3.friend === peer) out.push({ key: u3.key, u: u3 });
  return out;
}
var following = /* @__PURE__ */ new WeakSet();
function followBottom(box) {
  if (following.has(box)) return;
  following.add(box);
  requestAnimationFrame(() => {
    following.delete(box);
    box.scrollTop = box.scrollHeight;
  });
}
function Timeline({ peer }) {
  const ref = A2(null);
  const committed = A2({ peer: null, first: "", last: "" });
  const atBottom = A2(true);
  const conv2 = state.convs[peer] || { messages: [], loaded: false, loading: false, done: false };
  const items = timeline(peer);
  const first = items.length ? items[0].key : "";
  const last = items.length ? items[items.length - 1].key : "";
  const lastItem = items[items.length - 1];
  const mine = !!(lastItem && (lastItem.m && lastItem.m.direction === "out" || lastItem.u));
  const el = ref.current;
  const k0 = committed.current;
  const pre = el && k0.peer === peer && first !== k0.first && last === k0.last ? { height: el.scrollHeight, top: el.scrollTop } : null;
  _2(() => {
    const box = ref.current;
    if (!box) return;
    const k3 = committed.current;
    if (k3.peer === peer && first === k3.first && last === k3.last) return;
    if (k3.peer !== peer) {
      box.scrollTop = box.scrollHeight;
      atBottom.current = true;
    } else if (pre) {
      box.scrollTop = box.scrollHeight - pre.height + pre.top;
    } else if (last !== k3.last && (atBottom.current || mine)) {
      followBottom(box);
    }
    committed.current = { peer, first, last };
  });
  _2(() => {
    const box = ref.current;
    if (box && conv2.loaded && !conv2.done && !conv2.loading && box.scrollHeight <= box.clientHeight) {
      loadOlder(peer);
    }
  }, [peer, first, conv2.loaded, conv2.done, conv2.loading]);
  const onScroll = (e3) => {
    const box = e3.currentTarget;
    atBottom.current = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    if (box.scrollTop < 120) loadOlder(peer);
  };
  return html`<div class="timeline scroll" ref=${ref} onScroll=${onScroll} data-testid="timeline" aria-live="polite">
    ${conv2.loading && html`<p class="loading-older">Loading…</p>`}
    ${conv2.loaded && conv2.done && html`<p class="history-start">Start of your conversation</p>`}
    ${conv2.error && html`<p class="field-error">${conv2.error} <button class="btn small" onClick=${() => loadHistory(peer)}>Retry</button></p>`}
    <ul class="plain msgs">
      ${items.map((it) => {
    if (it.day) return html`<li key=${it.key} class="day-sep"><span>${it.day}</span></li>`;
    if (it.m) return html`<${Message} key=${it.key} m=${it.m} />`;
    if (it.t) return html`<${TransferCard} key=${it.key} t=${it.t} />`;
    return html`<${UploadCard} key=${it.key} u=${it.u} />`;
  })}
    </ul>
  </div>`;
}
function Composer({ contact }) {
  const [text, setText] = d2("");
  const area = A2(null);
  const friend = contact.state === "friend";
  h2(() => {
    if (area.current && window.matchMedia("(min-width: 701px)").matches) area.current.focus();
  }, [contact.peer_id]);
  _2(() => {
    const a3 = area.current;
    if (!a3) return;
    a3.style.height = "auto";
    if (text) a3.style.height = `${Math.min(a3.scrollHeight, 160)}px`;
  }, [text]);
  const send = async () => {
    const t4 = area.current ? area.current.value : text;
    if (!t4.trim()) return;
    setText("");
    try {
      await sendMessage(contact.peer_id, t4);
    } catch (err) {
      setText((cur) => cur.trim() ? `${t4}
${cur}` : t4);
      toast(`Not sent: ${err.message}`, "error");
    } finally {
      if (area.current) area.current.focus();
    }
  };
  const onKey = (e3) => {
    if (e3.key === "Enter" && !e3.shiftKey && !e3.isComposing) {
      e3.preventDefault();
      send();
    }
  };
  const onFiles = (e3) => {
    const files = [...e3.currentTarget.files];
    e3.currentTarget.value = "";
    if (files.length) sendFiles(contact.peer_id, files);
  };
  return html`<form class="composer" onSubmit=${(e3) => {
    e3.preventDefault();
    send();
  }}>
    <label class=${`icon-btn attach ${friend ? "" : "disabled"}`} title="Send a file" aria-label="Send a file">
      <${Icon} name="clip" />
      <input type="file" multiple class="file-input" data-testid="file-input" disabled=${!friend} onChange=${onFiles} />
    </label>
    <textarea ref=${area} class="input compose-text" rows="1" name="text" data-testid="composer"
      placeholder=${friend ? `Message ${contact.display_name}` : "You can write once they accept your request"}
      value=${text} disabled=${!friend} onInput=${(e3) => setText(e3.currentTarget.value)} onKeyDown=${onKey}
      maxlength="16384" aria-label="Message"></textarea>
    <button class="icon-btn send" type="submit" data-testid="send" aria-label="Send" disabled=${!friend || !text.trim()}>
      <${Icon} name="send" />
    </button>
  </form>`;
}
function Chat() {
  const contact = state.contacts[state.selected];
  const [drag, setDrag] = d2(0);
  if (!contact) {
    return html`<main class="pane chat"><header class="pane-head">
      <button class="icon-btn back" aria-label="Back to the list" onClick=${back}><${Icon} name="back" /></button>
      <h1 class="pane-title">Not a contact any more</h1></header>
      <div class="pane-body"><p class="empty">This conversation's contact was removed.</p></div></main>`;
  }
  const hasFiles = (e3) => e3.dataTransfer && [...e3.dataTransfer.types].includes("Files");
  const friend = contact.state === "friend";
  const onDragEnter = (e3) => {
    if (!hasFiles(e3) || !friend) return;
    e3.preventDefault();
    setDrag((n3) => n3 + 1);
  };
  const onDragOver = (e3) => {
    if (!hasFiles(e3) || !friend) return;
    e3.preventDefault();
    e3.dataTransfer.dropEffect = "copy";
  };
  const onDragLeave = (e3) => {
    if (!hasFiles(e3)) return;
    setDrag((n3) => Math.max(0, n3 - 1));
  };
  const onDrop = (e3) => {
    if (!hasFiles(e3)) return;
    e3.preventDefault();
    setDrag(0);
    if (friend) sendFiles(contact.peer_id, [...e3.dataTransfer.files]);
  };
  return html`<main class="pane chat" data-testid="chat" data-peer=${contact.peer_id}
    onDragEnter=${onDragEnter} onDragOver=${onDragOver} onDragLeave=${onDragLeave} onDrop=${onDrop}>
    <${Header} contact=${contact} />
    <${Timeline} peer=${contact.peer_id} />
    <${Composer} key=${contact.peer_id} contact=${contact} />
    ${drag > 0 && html`<div class="drop-overlay" data-testid="drop-overlay"><div><${Icon} name="file" /><p>Drop to send to ${contact.display_name}</p></div></div>`}
  </main>`;
}

// app/ui/group.js
function memberName(g2, peer) {
  const m3 = g2.members.find((x2) => x2.peer_id === peer);
  if (m3 && m3.me) return "you";
  if (m3 && m3.name) return m3.name;
  const c3 = state.contacts[peer];
  return c3 ? c3.display_name : shortId(peer);
}
function GroupMessage({ g: g2, m: m3 }) {
  const all = m3.held_by >= m3.members;
  return html`<li class=${`msg ${m3.direction}`} data-testid="group-message" data-direction=${m3.direction} data-sender=${m3.sender}>
    <div class="bubble">
      ${m3.direction === "in" && html`<span class="msg-sender" data-testid="msg-sender">${memberName(g2, m3.sender)}</span>`}
      <p class="msg-text" data-testid="msg-text">${m3.text}</p>
      <span class="msg-meta">${time(m3.sent_at)}
        ${m3.direction === "out" && html`<span class=${`msg-state ${all ? "delivered" : "pending"}`} data-testid="held" data-held=${m3.held_by} data-members=${m3.members}
          title=${`held by ${m3.held_by} of ${m3.members} members`}>
          <${Icon} name=${all ? "checks" : "clock"} /><span class="held-label">${m3.held_by}/${m3.members}</span></span>`}
      </span>
    </div>
  </li>`;
}
function Members({ g: g2 }) {
  const [friend, setFriend] = d2("");
  const [name, setName] = d2("");
  const me = g2.members.find((m3) => m3.me) || {};
  const inGroup = new Set(g2.members.map((m3) => m3.peer_id));
  const invitable = Object.values(state.contacts).filter((c3) => c3.state === "friend" && !inGroup.has(c3.peer_id));
  const joined = g2.status === "joined";
  return html`<details class="members" data-testid="group-members">
    <summary>${plural(g2.members.length, "member")} · ${g2.members.filter((m3) => m3.online && !m3.me).length} online</summary>
    <ul class="plain">
      ${g2.members.map(
    (m3) => html`<li key=${m3.peer_id} class="member" data-testid="member" data-peer=${m3.peer_id}>
          <span class=${`presence ${m3.online ? "on" : "off"}`}></span>
          <span class="member-name">${m3.me ? "you" : m3.name || shortId(m3.peer_id)}</span>
          ${!m3.friend && !m3.me && html`<span class="member-tag" title="a member who is not your friend">not a friend</span>`}
          ${m3.owner ? html`<span class="member-tag">owner</span>` : m3.admin && html`<span class="member-tag">admin</span>`}
          ${joined && me.admin && !m3.me && !m3.owner && html`<button class="btn small" data-testid="member-remove"
            onClick=${() => groupAction("groups.remove", { group: g2.id, member: m3.peer_id })}>Remove</button>`}
          ${joined && me.owner && !m3.me && html`<button class="btn small" data-testid="member-admin"
            onClick=${() => groupAction("groups.admin", { group: g2.id, member: m3.peer_id, admin: !m3.admin })}>${m3.admin ? "Not admin" : "Make admin"}</button>`}
        </li>`
  )}
    </ul>
    ${joined && me.admin && invitable.length > 0 && html`<form class="row-actions" onSubmit=${async (e3) => {
    e3.preventDefault();
    if (friend && await groupAction("groups.invite", { group: g2.id, friend })) setFriend("");
  }}>
      <select class="input" data-testid="invite-friend" value=${friend} onChange=${(e3) => setFriend(e3.currentTarget.value)}>
        <option value="">Invite a friend…</option>
        ${invitable.map((c3) => html`<option key=${c3.peer_id} value=${c3.peer_id}>${c3.display_name}</option>`)}
      </select>
      <button class="btn small primary" data-testid="invite-submit" disabled=${!friend}>Invite</button>
    </form>`}
    ${joined && me.admin && html`<form class="row-actions" onSubmit=${async (e3) => {
    e3.preventDefault();
    if (name.trim() && await groupAction("groups.rename", { group: g2.id, name: name.trim() })) setName("");
  }}>
      <input class="input" data-testid="rename-group" placeholder="New name" value=${name} onInput=${(e3) => setName(e3.currentTarget.value)} maxlength="128" />
      <button class="btn small" disabled=${!name.trim()}>Rename</button>
    </form>`}
    ${joined && html`<div class="row-actions"><button class="btn small danger" data-testid="group-leave"
      onClick=${() => groupAction("groups.leave", { group: g2.id })}>Leave the group</button></div>`}
  </details>`;
}
function Timeline2({ g: g2 }) {
  const ref = A2(null);
  const conv2 = state.gconvs[g2.id] || { messages: [], loaded: false, loading: false, error: "" };
  const last = conv2.messages.length ? conv2.messages[conv2.messages.length - 1] : null;
  const lastKey = last ? `${last.sender}/${last.seq}` : "";
  _2(() => {
    const box = ref.current;
    if (box) box.scrollTop = box.scrollHeight;
  }, [g2.id, lastKey]);
  return html`<div class="timeline scroll" ref=${ref} data-testid="group-timeline" aria-live="polite">
    ${conv2.loading && !conv2.loaded && html`<p class="loading-older">Loading…</p>`}
    ${conv2.error && html`<p class="field-error">${conv2.error} <button class="btn small" onClick=${() => loadGroupHistory(g2.id)}>Retry</button></p>`}
    ${conv2.loaded && conv2.messages.length === 0 && html`<p class="history-start">No messages yet. You read what is sent from when you joined.</p>`}
    <ul class="plain msgs">
      ${conv2.messages.map((m3) => html`<${GroupMessage} key=${`${m3.sender}/${m3.seq}`} g=${g2} m=${m3} />`)}
    </ul>
  </div>`;
}
function Composer2({ g: g2 }) {
  const [text, setText] = d2("");
  const area = A2(null);
  const joined = g2.status === "joined";
  const send = async () => {
    const t4 = area.current ? area.current.value : text;
    if (!t4.trim()) return;
    setText("");
    try {
      await sendGroupMessage(g2.id, t4);
    } catch (err) {
      setText((cur) => cur.trim() ? `${t4}
${cur}` : t4);
      const lost = err.name_ === "not_connected";
      toast(lost ? "The connection dropped: check the conversation before sending this again" : `Not sent: ${err.message}`, "error");
    }
  };
  return html`<form class="composer" onSubmit=${(e3) => {
    e3.preventDefault();
    send();
  }}>
    <textarea ref=${area} class="input compose-text" rows="1" data-testid="group-composer" disabled=${!joined}
      placeholder=${joined ? `Message ${g2.name}` : `You are not in this group (${g2.status})`}
      value=${text} onInput=${(e3) => setText(e3.currentTarget.value)} maxlength="16384" aria-label="Message"
      onKeyDown=${(e3) => {
    if (e3.key === "Enter" && !e3.shiftKey && !e3.isComposing) {
      e3.preventDefault();
      send();
    }
  }}></textarea>
    <button class="icon-btn send" type="submit" data-testid="group-send" aria-label="Send" disabled=${!joined || !text.trim()}>
      <${Icon} name="send" />
    </button>
  </form>`;
}
var STATUS_TEXT = {
  invited: "you are invited",
  declined: "you declined",
  left: "you left",
  removed: "you were removed"
};
function GroupChat() {
  const g2 = state.groups[state.selectedGroup];
  if (!g2) return html`<main class="pane chat"><div class="pane-body"><p class="empty">No such group.</p></div></main>`;
  const invited = g2.status === "invited";
  return html`<main class="pane chat" data-testid="group-chat" data-group=${g2.id}>
    <header class="pane-head chat-head">
      <button class="icon-btn back" aria-label="Back to the list" onClick=${back}><${Icon} name="back" /></button>
      <span class=${`avatar ${hue(g2.id)}`}>${initial(g2.name)}</span>
      <div class="chat-title">
        <h1 class="pane-title" data-testid="group-name">${g2.name}</h1>
        <span class="contact-sub">${STATUS_TEXT[g2.status] || plural(g2.members.length, "member")}</span>
      </div>
    </header>
    ${invited ? html`<div class="pane-body invitation" data-testid="invitation">
          <p>${memberName(g2, g2.inviter)} invited you to <strong>${g2.name}</strong> (${plural(g2.members.length, "member")}).
            Until you join, your daemon takes part in nothing.</p>
          <div class="row-actions">
            <button class="btn primary" data-testid="group-join" onClick=${() => groupAction("groups.join", { group: g2.id })}>Join</button>
            <button class="btn" data-testid="group-decline" onClick=${() => groupAction("groups.decline", { group: g2.id })}>Decline</button>
          </div>
        </div>` : html`<${Members} g=${g2} /><${Timeline2} g=${g2} /><${Composer2} key=${g2.id} g=${g2} />`}
  </main>`;
}

// app/ui/call.js
function who(peer) {
  return state.contacts[peer] || { peer_id: peer, display_name: shortId(peer), state: "friend", online: true };
}
function Ring() {
  const call = state.call;
  if (!call || call.state !== "ringing_in" || state.media) return null;
  const c3 = who(call.peer_id);
  return html`<div class="modal-back">
    <div class="modal ring" role="alertdialog" aria-labelledby="ring-title" data-testid="ring">
      <${Avatar} contact=${c3} size="big" />
      <h2 id="ring-title" class="ring-title">${c3.display_name}</h2>
      <p class="ring-sub">is calling you · ${call.video ? "video call" : "audio call"}</p>
      <div class="ring-actions">
        <span class="ring-choice">
          <button class="round-btn decline" data-testid="ring-decline" aria-label="Decline" onClick=${hangup}>
            <${Icon} name="hangup" />
          </button>
          <span aria-hidden="true">Decline</span>
        </span>
        <span class="ring-choice">
          <button class="round-btn accept" data-testid="ring-accept" aria-label="Accept" onClick=${answer}>
            <${Icon} name=${call.video ? "video" : "phone"} />
          </button>
          <span aria-hidden="true">Accept</span>
        </span>
      </div>
    </div>
  </div>`;
}
function Video({ stream, cls, muted, testid }) {
  const ref = A2(null);
  h2(() => {
    const v3 = ref.current;
    if (!v3) return;
    if (v3.srcObject !== stream) v3.srcObject = stream || null;
    if (stream && v3.paused) v3.play().catch(() => {
    });
  });
  return html`<video ref=${ref} class=${cls} autoplay playsinline muted=${muted} data-testid=${testid}></video>`;
}
function useTick(ms) {
  const [, set] = d2(0);
  h2(() => {
    const t4 = setInterval(() => set((n3) => n3 + 1), ms);
    return () => clearInterval(t4);
  }, [ms]);
}
var PHASE = {
  offering: "Calling…",
  ringing_out: "Ringing…",
  ringing_in: "Answering…",
  connecting: "Connecting…"
};
function statsLine(s3) {
  if (!s3) return "";
  const parts = [];
  if (s3.codecs && s3.codecs.length) parts.push(s3.codecs.map((c3) => c3.split("/")[1] || c3).join(" + "));
  if (s3.fps) parts.push(`${s3.fps} fps`);
  if (s3.resolution) parts.push(s3.resolution);
  if (s3.kbps_in != null) parts.push(`${s3.kbps_in} kbps in`);
  if (s3.kbps_out) parts.push(`${s3.kbps_out} kbps out`);
  const rtt = s3.rtt_ms ?? s3.video_rtt_ms ?? s3.audio_rtt_ms;
  if (rtt != null) parts.push(`rtt ${Math.round(rtt)} ms`);
  if (s3.path && s3.path.remote) parts.push(`${s3.path.relayed ? "relayed" : "direct"} to ${s3.path.remote}`);
  return parts.join(" · ");
}
function CallPanel() {
  const call = state.call;
  const m3 = state.media;
  useTick(1e3);
  const [daemonStats, setDaemonStats] = d2(null);
  const owned = !!m3;
  h2(() => {
    if (owned || !call) return void 0;
    const poll = async () => {
      try {
        const { calls } = await rpc.call("calls.list");
        const live = calls.find((c4) => c4.id === call.id);
        setDaemonStats(live && live.stats ? live.stats : null);
      } catch (err) {
      }
    };
    poll();
    const t4 = setInterval(poll, 2e3);
    return () => clearInterval(t4);
  }, [owned, call && call.id]);
  if (!m3 && (!call || call.state === "ringing_in")) return null;
  const peer = call && call.peer_id || state.selected;
  const c3 = who(peer);
  const video = m3 ? m3.video : !!(call && call.video);
  const phase = call ? call.state : "offering";
  const since = call && call.connected_at;
  const label = phase === "active" && since ? clock(Date.now() - since) : PHASE[phase] || (m3 ? "Starting…" : phase);
  const stats = m3 ? m3.stats : daemonStats;
  const hasRemoteVideo = m3 && m3.remote.getVideoTracks().length > 0;
  return html`<section class=${`call-panel ${video ? "video" : "audio"}`} data-testid="call" data-state=${phase}
    aria-label=${`Call with ${c3.display_name}`}>
    <div class="call-stage">
      ${m3 && video && html`<${Video} stream=${m3.remote} cls=${`remote ${hasRemoteVideo ? "" : "waiting"}`} muted=${false} testid="remote-video" />`}
      ${m3 && !video && html`<${Video} stream=${m3.remote} cls="remote hidden" muted=${false} testid="remote-audio" />`}
      ${(!video || !hasRemoteVideo) && html`<div class="call-placeholder"><${Avatar} contact=${c3} size="huge" /></div>`}
      ${m3 && video && m3.local && html`<div class=${`self-view ${m3.camOff ? "off" : ""}`}>
        <${Video} stream=${m3.local} cls="self" muted=${true} testid="self-video" />
        ${m3.camOff && html`<span class="self-label"><${Icon} name="videoOff" /> Camera off</span>`}
        ${m3.muted && html`<span class="self-muted" title="You are muted"><${Icon} name="micOff" /></span>`}
      </div>`}
      <div class="call-top">
        <span class="call-name">${c3.display_name}</span>
        <span class="call-phase" data-testid="call-phase">${label}</span>
      </div>
      ${!m3 && call && html`<p class="call-note">This call's media runs in your daemon${call.media === "browser" ? " (another page)" : ""}, not in this page.</p>`}
    </div>
    <div class="call-bar">
      <p class="call-stats" data-testid="call-stats" data-frames-decoded=${stats ? stats.frames_decoded ?? stats.video_frames_in ?? 0 : 0}
        data-connection=${m3 ? m3.connection : ""}>${statsLine(stats)}</p>
      <div class="call-controls">
        ${m3 && html`<button class=${`round-btn ${m3.muted ? "toggled" : ""}`} data-testid="call-mute" aria-pressed=${m3.muted}
          aria-label=${m3.muted ? "Unmute" : "Mute"} title=${m3.muted ? "Unmute" : "Mute"} onClick=${toggleMute}>
          <${Icon} name=${m3.muted ? "micOff" : "mic"} /></button>`}
        ${m3 && video && html`<button class=${`round-btn ${m3.camOff ? "toggled" : ""}`} data-testid="call-camera" aria-pressed=${m3.camOff}
          aria-label=${m3.camOff ? "Camera on" : "Camera off"} title=${m3.camOff ? "Camera on" : "Camera off"} onClick=${toggleCamera}>
          <${Icon} name=${m3.camOff ? "videoOff" : "video"} /></button>`}
        <button class="round-btn decline" data-testid="call-hangup" aria-label="Hang up" title="Hang up" onClick=${hangup}>
          <${Icon} name="hangup" /></button>
      </div>
    </div>
  </section>`;
}

// app/ui/shell.js
function Login() {
  const reason = {
    wrong_token: "That link's token is wrong or old (it was renewed).",
    rotated: "The access token was renewed, so this page was logged out."
  }[state.loginReason];
  return html`<main class="login" data-testid="login">
    <div class="login-card">
      <span class="logo big" aria-hidden="true">p2p</span>
      <h1>Open the link that <code>p2pchat web</code> prints</h1>
      ${reason && html`<p class="field-error" role="alert" data-testid="login-reason">${reason}</p>`}
      <p>This page talks to the p2pchat daemon on this computer. To let it in, run this in a terminal
        and open the link it prints (or let it open the browser for you):</p>
      <pre class="mono">p2pchat web --open</pre>
      <p class="hint">The link holds a secret token. It is swapped for a cookie and removed from the
        address bar at once; do not share it. <code>p2pchat web --new-token</code> makes a new one and logs out every page.</p>
    </div>
  </main>`;
}
function ConnBanner() {
  const [, tick] = d2(0);
  h2(() => {
    if (state.conn !== "down") return void 0;
    const t4 = setInterval(() => tick((n3) => n3 + 1), 500);
    return () => clearInterval(t4);
  }, [state.conn]);
  if (state.conn === "open") return null;
  if (state.conn === "connecting") {
    return html`<div class="banner connecting" role="status" data-testid="conn-banner">Connecting to your daemon…</div>`;
  }
  const secs = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1e3));
  return html`<div class="banner down" role="alert" data-testid="conn-banner">
    <strong>Daemon not reachable.</strong>
    <span>Is <code>p2pchatd</code> running? Retrying${secs ? ` in ${secs} s` : "…"}</span>
    <button class="btn small" onClick=${() => rpc.retryNow()}>Retry now</button>
  </div>`;
}
function Toasts() {
  return html`<div class="toasts" aria-live="polite">
    ${state.toasts.map((t4) => html`<div key=${t4.id} class=${`toast ${t4.kind}`} data-testid="toast">${t4.text}</div>`)}
  </div>`;
}
function Main() {
  if (state.view === "chat" && state.selected) return html`<${Chat} />`;
  if (state.view === "group" && state.selectedGroup) return html`<${GroupChat} />`;
  if (state.view === "status") return html`<${Status} />`;
  return html`<${Home} />`;
}
function App() {
  if (state.phase === "boot") return html`<div class="boot">Loading…</div>`;
  if (state.phase === "login") return html`<${Login} />`;
  const inCall = !!(state.media || state.call && state.call.state !== "ringing_in");
  return html`<div class=${`app pane-${state.pane} ${inCall ? "in-call" : ""}`} data-testid="app">
    <${ConnBanner} />
    <div class="columns">
      <${Sidebar} />
      <${Main} />
    </div>
    <${CallPanel} />
    <${Ring} />
    <${Toasts} />
  </div>`;
}

// app/main.js
var root = document.getElementById("app");
var ready = false;
function draw() {
  R(html`<${App} />`, root);
  if (!ready && state.phase === "app" && state.me && state.loaded) {
    ready = true;
    performance.mark("p2pchat-ready");
    document.documentElement.dataset.ready = "true";
  }
  const unread = Object.values(state.contacts).reduce((n3, c3) => n3 + (c3.unread || 0), 0);
  const ringing = state.call && state.call.state === "ringing_in";
  const title = `${ringing ? "📞 " : ""}${unread ? `(${unread}) ` : ""}p2pchat`;
  if (document.title !== title) document.title = title;
}
window.addEventListener("dragover", (e3) => e3.preventDefault());
window.addEventListener("drop", (e3) => e3.preventDefault());
subscribe(draw);
draw();
boot();
