"""Every label and message of the console in English and Simplified Chinese.

``Tr(lang)(key, **fields)`` gives the text in the user's language; a key missing
from :data:`MESSAGES` is a programming error (``KeyError``), and a unit test checks
that every key has both languages and the same ``{fields}`` in each.
"""

from __future__ import annotations

from typing import Final

__all__ = ["LANGUAGES", "MESSAGES", "Tr"]

LANGUAGES: Final = ("en", "zh")

MESSAGES: Final[dict[str, tuple[str, str]]] = {
    # frame
    "app.title": ("metrogate supervision console", "metrogate 质量监督控制台"),
    "nav.fleet": ("Fleet", "网关"),
    "nav.points": ("Points", "测点"),
    "nav.instruments": ("Instruments", "计量器具"),
    "nav.alarms": ("Alarms", "报警"),
    "nav.risk": ("Where to inspect first", "优先检查"),
    "nav.report": ("Report", "报告"),
    "nav.logout": ("Log out", "退出"),
    "nav.language": ("中文", "English"),
    "user.signed_in": ("{user} ({role})", "{user}（{role}）"),
    "role.viewer": ("viewer", "查看者"),
    "role.operator": ("operator", "操作员"),
    # login
    "login.title": ("Log in", "登录"),
    "login.user": ("User", "用户名"),
    "login.password": ("Password", "密码"),
    "login.submit": ("Log in", "登录"),
    "login.failed": ("Unknown user or wrong password.", "用户名或密码错误。"),
    "login.throttled": (
        "Too many failed attempts; try again in a minute.",
        "失败次数过多，请一分钟后再试。",
    ),
    # errors
    "error.not_found": ("Not found", "未找到"),
    "error.not_found_text": ("There is no {what} {name}.", "不存在{what} {name}。"),
    "error.what.gateway": ("gateway", "网关"),
    "error.what.point": ("point", "测点"),
    "error.what.alarm": ("alarm", "报警"),
    "error.what.page": ("page", "页面"),
    "error.forbidden": ("Not allowed", "无权操作"),
    "error.forbidden_text": (
        "Your role does not allow this action.",
        "您的角色不允许执行此操作。",
    ),
    "error.csrf": (
        "The form has expired or did not come from this console. Reload the page and try again.",
        "表单已过期或并非来自本控制台。请刷新页面后重试。",
    ),
    "error.bad_request": ("Bad request", "请求无效"),
    "error.store_down": ("The store is unavailable", "数据存储不可用"),
    "error.store_down_text": (
        "The console cannot read the store ({store}): {detail}. This page retries every "
        "{seconds} seconds.",
        "控制台无法读取数据存储（{store}）：{detail}。本页面每 {seconds} 秒自动重试。",
    ),
    "error.internal": ("Internal error", "内部错误"),
    # common
    "col.site": ("Site", "站点"),
    "col.gateway": ("Gateway", "网关"),
    "col.device": ("Device", "设备"),
    "col.point": ("Point", "测点"),
    "col.unit": ("Unit", "单位"),
    "col.instrument": ("Instrument", "计量器具"),
    "col.time": ("Time (UTC)", "时间（UTC）"),
    "col.value": ("Value", "数值"),
    "none": ("—", "—"),
    "filter": ("Filter", "筛选"),
    "apply": ("Apply", "应用"),
    "all": ("all", "全部"),
    "range": ("Range", "时间范围"),
    "evidence": ("Evidence", "证据"),
    "yes": ("yes", "是"),
    "no": ("no", "否"),
    # fleet
    "fleet.title": ("Fleet", "网关总览"),
    "fleet.state": ("State", "状态"),
    "fleet.online": ("online", "在线"),
    "fleet.offline": ("offline", "离线"),
    "fleet.unknown": ("unknown", "未知"),
    "fleet.last_seen": ("Last seen (UTC)", "最后通信（UTC）"),
    "fleet.today": ("Complete today", "今日完整率"),
    "fleet.week": ("Complete 7 days", "7 日完整率"),
    "fleet.gaps": ("Missing batches", "缺失批次"),
    "fleet.security": ("Replays / forgeries / dead letters", "重放 / 伪造 / 死信"),
    "fleet.numbering": ("Counter resets / event-log gaps", "序号回退 / 事件日志缺口"),
    "fleet.software": ("Software", "软件标识"),
    "fleet.key": ("Key id", "密钥 ID"),
    "fleet.clock": ("Clock", "时钟"),
    "fleet.audit": ("event log", "事件日志"),
    "fleet.empty": ("No gateway has reported to this store yet.", "尚无网关向此存储上报数据。"),
    "fleet.unregistered": (
        "From senders that are no registered gateway (topics naming an unknown gateway), "
        "last 7 days: {forgeries} forgeries, {dead_letters} dead letters.",
        "来自未注册发送方（主题中的网关未登记）的消息，近 7 日："
        "伪造 {forgeries} 条，死信 {dead_letters} 条。",
    ),
    "clock.synchronised": ("synchronised", "已同步"),
    "clock.unsynchronised": ("not synchronised", "未同步"),
    "clock.unknown": ("unknown", "未知"),
    # points
    "points.title": ("Points", "测点列表"),
    "points.empty": ("No readings in the last 30 days.", "最近 30 天没有读数。"),
    "point.title": ("Point {point}", "测点 {point}"),
    "point.value_chart": ("Value, specification and conformity", "数值、规格限与符合性判定"),
    "point.control_chart": ("Control chart ({kind})", "控制图（{kind}）"),
    "point.range_chart": ("Range chart", "极差图"),
    "chart.individuals": ("individuals", "单值"),
    "chart.xbar_r": ("X̄–R", "均值–极差"),
    "chart.xbar": ("X̄ of downsampled buckets", "降采样区间均值 X̄"),
    "point.downsampled": (
        "{total} readings, shown as {n} buckets of {bucket} (mean, min–max), aggregated "
        "in the database.",
        "共 {total} 个读数，按 {bucket} 分为 {n} 个区间显示（均值、最小–最大），由数据库聚合。",
    ),
    "point.raw": ("{total} readings, each shown.", "共 {total} 个读数，逐个显示。"),
    "point.no_data": ("No numeric readings in this range.", "此时间范围内没有数值读数。"),
    "point.lower": ("Lower limit", "下限"),
    "point.upper": ("Upper limit", "上限"),
    "point.guard": ("Guard band (U = {U}, k = {k})", "保护带（U = {U}，k = {k}）"),
    "point.no_limits": (
        "No specification limits configured for this point (console.points).",
        "此测点未配置规格限（console.points）。",
    ),
    "point.centre": ("Centre line", "中心线"),
    "point.ucl": ("UCL", "上控制限"),
    "point.lcl": ("LCL", "下控制限"),
    "point.cpk": ("Cpk over the window", "窗口内 Cpk"),
    "point.cpk_min": ("minimum {min}", "最低要求 {min}"),
    "point.mean": ("Mean", "均值"),
    "point.sigma": ("σ̂ (MR̄/1.128)", "σ̂（MR̄/1.128）"),
    "point.count": ("Readings", "读数"),
    "point.verdicts": ("Conformity verdicts", "符合性判定"),
    "point.qualities": ("Quality", "数据质量"),
    "point.reasons": ("Reasons", "原因"),
    "point.violations": ("Nelson-rule violations", "Nelson 判异准则违反"),
    "point.no_violations": ("No Nelson-rule violation in this window.", "此窗口内无判异。"),
    "point.rule": ("rule {n}", "准则 {n}"),
    "point.flagged": ("Flagged at the gateway", "网关标记"),
    "point.markers": ("Readings not plainly conforming", "非明确合格的读数"),
    "verdict.pass": ("pass", "合格"),
    "verdict.conditional_pass": ("conditional pass", "有条件合格"),
    "verdict.conditional_fail": ("conditional fail", "有条件不合格"),
    "verdict.fail": ("fail", "不合格"),
    "quality.good": ("good", "良好"),
    "quality.uncertain": ("uncertain", "不确定"),
    "quality.bad": ("bad", "坏值"),
    # instruments
    "inst.title": ("Instruments", "计量器具"),
    "inst.certificate": ("Certificate", "校准证书"),
    "inst.lab": ("Laboratory", "校准机构"),
    "inst.valid_until": ("Valid until", "有效期至"),
    "inst.days_left": ("Days left", "剩余天数"),
    "inst.status": ("Status", "状态"),
    "inst.readings": ("Readings (30 d)", "读数（30 天）"),
    "inst.empty": ("No instrument has reported.", "尚无计量器具数据。"),
    "status.valid": ("valid", "有效"),
    "status.due_soon": ("due soon", "即将到期"),
    "status.expired": ("expired", "已过期"),
    "status.missing": ("missing", "缺失"),
    "status.unknown": ("unknown", "未知"),
    # alarms
    "alarms.title": ("Alarms", "报警"),
    "alarms.current": ("Current state", "当前状态"),
    "alarms.history": ("History", "历史"),
    "alarms.alarm": ("Alarm", "报警"),
    "alarms.state": ("State", "状态"),
    "alarms.severity": ("Severity", "严重度"),
    "alarms.event": ("Event", "事件"),
    "alarms.user": ("By", "操作者"),
    "alarms.limit": ("Limit", "限值"),
    "alarms.message": ("Message", "信息"),
    "alarms.actions": ("Actions", "操作"),
    "alarms.ack": ("Acknowledge", "确认"),
    "alarms.shelve": ("Shelve", "搁置"),
    "alarms.minutes": ("minutes", "分钟"),
    "alarms.sent": (
        "{action} for {alarm} signed as operator {operator} and sent to {gateway}. The state "
        "changes here once the gateway has carried it out.",
        "{alarm} 的{action}命令已由操作员 {operator} 签名并发送至 {gateway}。"
        "网关执行后此处状态将更新。",
    ),
    "alarms.send_failed": ("The command could not be sent: {detail}", "命令发送失败：{detail}"),
    "alarms.no_key": (
        "Your user has no operator key configured; ask the administrator.",
        "您的用户未配置操作员密钥，请联系管理员。",
    ),
    "alarms.empty": ("No alarm records in the last 30 days.", "最近 30 天无报警记录。"),
    "alarms.viewer_note": (
        "Viewers see alarms; operators acknowledge and shelve them.",
        "查看者只能查看报警；操作员可确认和搁置。",
    ),
    "event.raised": ("raised", "触发"),
    "event.returned": ("returned to normal", "恢复正常"),
    "event.cleared": ("cleared", "已清除"),
    "event.acknowledged": ("acknowledged", "已确认"),
    "event.shelved": ("shelved", "已搁置"),
    "event.unshelved": ("unshelved", "取消搁置"),
    "severity.low": ("low", "低"),
    "severity.medium": ("medium", "中"),
    "severity.high": ("high", "高"),
    "severity.critical": ("critical", "严重"),
    "state.normal": ("normal", "正常"),
    "state.active_unacknowledged": ("active, unacknowledged", "激活，未确认"),
    "state.active_acknowledged": ("active, acknowledged", "激活，已确认"),
    "state.returned_unacknowledged": ("returned, unacknowledged", "已恢复，未确认"),
    "state.shelved": ("shelved", "已搁置"),
    # risk
    "risk.title": ("Where to inspect first", "优先检查清单"),
    "risk.intro": (
        "Sites and instruments ranked by a score: each indicator that applies adds its "
        "weight (console.risk, docs/supervision.md). Window: {window}.",
        "按风险分数排序的站点与计量器具：每个适用的指标加上其权重（console.risk，见 "
        "docs/supervision.md）。窗口：{window}。",
    ),
    "risk.rank": ("Rank", "排名"),
    "risk.subject": ("Site / instrument", "站点 / 计量器具"),
    "risk.score": ("Score", "分数"),
    "risk.indicators": ("Indicators", "指标"),
    "risk.kind.site": ("site", "站点"),
    "risk.kind.instrument": ("instrument", "计量器具"),
    "risk.none": ("Nothing to inspect: no indicator applies.", "无需检查：没有适用的指标。"),
    "ind.out_of_tolerance": (
        "out of tolerance: {n} of {total} readings ({rate})",
        "超差：{total} 个读数中 {n} 个（{rate}）",
    ),
    "ind.conditional": (
        "conditional verdicts: {n} of {total} readings ({rate})",
        "有条件判定：{total} 个读数中 {n} 个（{rate}）",
    ),
    "ind.spc_signals": ("SPC signals: {n} flagged readings", "SPC 信号：{n} 个被标记读数"),
    "ind.cpk_low": ("Cpk {cpk} below {min}", "Cpk {cpk} 低于 {min}"),
    "ind.calibration_expired": ("calibration expired: {what}", "校准已过期：{what}"),
    "ind.calibration_missing": ("no calibration: {what}", "无校准：{what}"),
    "ind.calibration_due_soon": ("calibration due soon: {what}", "校准即将到期：{what}"),
    "ind.tamper": ("tamper counters changed: {n} time(s)", "防篡改计数器变化：{n} 次"),
    "ind.log_gaps": (
        "event-log or batch-sequence gaps (log n…, seq n), counter resets (↺), outbox drops: "
        "{what}",
        "事件日志或批次序号缺口（log 为日志序号，seq 为批次序号）、序号回退（↺）、"
        "发件箱丢弃：{what}",
    ),
    "ind.security": (
        "replays / forgeries / dead letters: {n}",
        "重放 / 伪造 / 死信：{n}",
    ),
    "ind.completeness": ("completeness {ratio} below {target}", "完整率 {ratio} 低于 {target}"),
    "ind.clock_unsynchronised": ("clock not synchronised: {what}", "时钟未同步：{what}"),
    # audit
    "audit.title": ("Event log of {gateway}", "{gateway} 的事件日志"),
    "audit.n": ("No.", "序号"),
    "audit.type": ("Type", "类型"),
    "audit.source": ("Source", "来源"),
    "audit.data": ("Content", "内容"),
    "audit.check": ("Verification", "验证"),
    "audit.summary": (
        "{n} entries received; {ok} verified; {bad} with problems.",
        "已接收 {n} 条；{ok} 条验证通过；{bad} 条有问题。",
    ),
    "audit.empty": ("No event-log entries received from this gateway.", "未收到该网关的事件日志。"),
    "check.ok": ("signature and chain verified", "签名与哈希链验证通过"),
    "check.bad_signature": ("signature does not match", "签名不匹配"),
    "check.unknown_key": ("signed with an unregistered key", "使用未登记的密钥签名"),
    "check.no_key": ("no public key registered for the gateway", "网关未登记公钥"),
    "check.malformed": ("entry incomplete", "条目不完整"),
    "check.broken_chain": ("does not follow the entry before", "与前一条目哈希链不衔接"),
    "check.gap": ("entries {first}–{last} missing before this one", "此前缺失第 {first}–{last} 条"),
    "check.reset": ("numbering restarted", "编号重新开始"),
    # report
    "report.title": ("Supervision report", "质量监督报告"),
    "report.period": ("Period: {start} – {end} (UTC)", "期间：{start} – {end}（UTC）"),
    "report.site": ("Site: {site}", "站点：{site}"),
    "report.all_sites": ("all sites", "全部站点"),
    "report.generated": ("Generated {ts} UTC by {user}", "生成时间 {ts} UTC，生成人 {user}"),
    "report.points": ("Points", "测点"),
    "report.oot": ("Out of tolerance", "超差率"),
    "report.download": ("Download the HTML report", "下载 HTML 报告"),
    "report.since": ("Period", "期间"),
    "report.print": (
        "Print this page or save it as PDF from the browser.",
        "可直接打印或另存为 PDF。",
    ),
}


class Tr:
    """The messages of one language; ``tr(key, **fields)``."""

    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGUAGES else "en"
        self._i = LANGUAGES.index(self.lang)

    def __call__(self, key: str, **fields: object) -> str:
        text = MESSAGES[key][self._i]
        return text.format(**fields) if fields else text

    def has(self, key: str) -> bool:
        return key in MESSAGES
