# SPDX-License-Identifier: AGPL-3.0-or-later
"""A generated corpus of Spanish reports for the casebook's analysis (tests and bench/patterns.py):
a background of ordinary complaints written from many sentence templates, with planted groups —

- **campaigns** (patterns): several people reporting the same thing at the same facility (the
  same medication missing, the same guard asking for the same sum) in their own words: two or
  three of the campaign's facts, each in one of several phrasings, mixed with ordinary sentences;
  most give the same structured answers;
- **spam floods**: one junk text sent many times with small changes.

Also :func:`fill`, which writes such a corpus straight into a casebook's tables (cases, items,
answers), as bench/casebook.py does for its own corpus.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

CITIES = {
    "Quito": "pichincha",
    "Guayaquil": "guayas",
    "Cuenca": "azuay",
    "Ambato": "tungurahua",
    "Manta": "manabi",
    "Portoviejo": "manabi",
    "Loja": "loja",
    "Machala": "el_oro",
    "Riobamba": "chimborazo",
    "Ibarra": "imbabura",
    "Latacunga": "cotopaxi",
    "Esmeraldas": "esmeraldas",
    "Babahoyo": "los_rios",
    "Quevedo": "los_rios",
    "Milagro": "guayas",
    "Durán": "guayas",
    "Santo Domingo": "santo_domingo",
    "Tulcán": "carchi",
    "Azogues": "canar",
    "Guaranda": "bolivar",
    "Puyo": "pastaza",
    "Tena": "napo",
    "Macas": "morona_santiago",
    "Zamora": "zamora_chinchipe",
    "Nueva Loja": "sucumbios",
    "Coca": "orellana",
    "La Libertad": "santa_elena",
    "Salinas": "santa_elena",
    "Sangolquí": "pichincha",
    "Cayambe": "pichincha",
    "Otavalo": "imbabura",
    "Daule": "guayas",
}
KINDS = [
    "Hospital General",
    "Centro de Salud",
    "Dispensario",
    "Hospital del Día",
    "Centro de Especialidades",
    "Unidad Médica",
    "Oficina de Afiliación",
    "Centro Clínico",
    "Hospital Básico",
    "Centro de Salud Tipo C",
    "Dispensario Central",
    "Unidad de Diálisis",
]
MEDS = [
    "insulina",
    "metformina",
    "losartán",
    "enalapril",
    "atorvastatina",
    "omeprazol",
    "levotiroxina",
    "salbutamol",
    "paracetamol",
    "ibuprofeno",
    "amoxicilina",
    "tamoxifeno",
    "carbamazepina",
    "warfarina",
    "eritropoyetina",
    "morfina",
    "sertralina",
    "risperidona",
    "metotrexato",
    "prednisona",
    "furosemida",
    "clopidogrel",
    "heparina",
    "valproato",
]
ROLES = [
    "el guardia",
    "la enfermera",
    "el médico de turno",
    "el jefe de farmacia",
    "la secretaria",
    "el administrador",
    "un funcionario",
    "el director",
    "la trabajadora social",
    "el encargado de bodega",
    "un auxiliar",
    "el jefe de área",
]
SERVICES = [
    "cardiología",
    "pediatría",
    "traumatología",
    "ginecología",
    "oncología",
    "diálisis",
    "emergencia",
    "odontología",
    "laboratorio",
    "rayos X",
    "terapia física",
    "oftalmología",
    "dermatología",
    "neurología",
    "urología",
    "psiquiatría",
]
THINGS = [
    "un turno",
    "una cita",
    "una cirugía",
    "un certificado",
    "una cama",
    "un examen",
    "una receta",
    "una silla de ruedas",
    "el traslado",
    "la afiliación",
    "un préstamo",
]
GENERIC = [
    "Soy afiliado desde hace {n} años y nunca había visto algo así.",
    "Mi {rel} tiene {age} años y necesita atención.",
    "Fuimos el {day} por la {time} y esperamos {n} horas.",
    "Nadie nos dio una explicación.",
    "Pedimos hablar con un responsable pero no nos recibieron.",
    "Ya presenté un reclamo en ventanilla y no pasó nada.",
    "Tengo miedo de represalias si doy mi nombre.",
    "Otros pacientes dicen lo mismo.",
    "Les pido que investiguen por favor.",
    "Esto pasa desde hace {n} meses.",
    "La atención es muy mala y tratan mal a los jubilados.",
    "Tuve que comprar todo en una farmacia privada con mi propio dinero.",
    "Perdí el día de trabajo por esperar.",
    "El sistema de turnos por teléfono nunca funciona.",
    "Me mandaron de una ventanilla a otra toda la mañana.",
    "No hay sillas en la sala de espera y la gente espera de pie.",
    "Mi {rel} es diabético y no puede esperar tanto.",
    "Llamé al call center {n} veces sin respuesta.",
    "Espero que esta denuncia sirva para algo.",
    "Adjunto lo que pude conseguir como prueba.",
    "La semana pasada volví y seguía igual.",
    "Hay personas con discapacidad esperando en la calle.",
    "Los baños están cerrados y sin agua.",
    "El {day} no había ningún médico en {service}.",
    "Me dijeron que regrese el {day}.",
    "Tengo la receta firmada pero no sirve de nada.",
    "La cita se cambió {n} veces sin aviso.",
    "Mi {rel} necesita {service} con urgencia.",
]
# Ordinary sentences are also built from parts, so that two unrelated reports rarely share a
# whole sentence (people do not write alike): who, what happened, where or when, and a coda.
WHO = [
    "Yo",
    "Mi familia",
    "Mi vecino",
    "Una compañera de trabajo",
    "Mi papá",
    "Mi mamá",
    "Un amigo",
    "Mi esposa",
    "Mi hijo",
    "La señora de al lado",
    "Un jubilado",
    "Varios afiliados",
    "Mi suegra",
    "Un paciente",
    "Mi cuñado",
    "Una señora embarazada",
    "Un señor en silla de ruedas",
]
WHAT = [
    "esperó toda la mañana",
    "tuvo que regresar otro día",
    "no pudo hacerse el examen",
    "salió sin respuesta",
    "se quejó en ventanilla",
    "llamó varias veces",
    "se enfermó más",
    "gastó lo que no tenía",
    "perdió el turno",
    "fue maltratado",
    "no encontró a nadie",
    "tuvo que pagar un taxi",
    "durmió afuera para coger ficha",
    "se cansó de reclamar",
    "pidió ayuda a un conocido",
    "viajó desde lejos",
    "se fue llorando",
    "firmó un papel",
    "dejó sus documentos",
    "presentó una queja escrita",
]
WHERE = [
    "en la ventanilla",
    "en la sala de espera",
    "en el parqueadero",
    "por teléfono",
    "en la puerta de entrada",
    "en el segundo piso",
    "en la oficina de reclamos",
    "en el pasillo",
    "a la salida",
    "en el área de admisión",
    "frente a todos",
    "el fin de semana",
    "a primera hora",
    "en feriado",
    "cerca del mediodía",
]
CODA = [
    "",
    "",
    "",
    "y nadie hizo nada",
    "otra vez",
    "como siempre",
    "sin ninguna explicación",
    "aunque tenía todo en regla",
    "y eso no es justo",
    "igual que el mes anterior",
    "a pesar de su edad",
    "con mucho dolor",
]
RELS = ["madre", "padre", "hijo", "hija", "esposo", "esposa", "abuela", "abuelo", "hermano", "tía"]
DAYS = ["lunes", "martes", "miércoles", "jueves", "viernes", "sábado"]
TIMES = ["mañana", "tarde", "noche", "madrugada"]
BY_CATEGORY = {
    "medication": [
        "En la farmacia de {fac} no hay {med}.",
        "No me entregaron {med} en {fac}.",
        "Me dicen que no hay stock de {med} hace {n} semanas.",
        "La receta de {med} quedó pendiente otra vez.",
        "En {fac} faltan medicamentos para enfermos crónicos.",
        "Dicen que el proveedor no ha entregado {med}.",
        "Mi {rel} toma {med} y en {fac} le dieron solo media receta.",
        "Cambiaron el {med} por otro genérico que le hace daño a mi {rel}.",
        "El {med} que entregan en {fac} está caducado.",
        "Hace {n} días que pido {med} para mi {rel} y no llega.",
    ],
    "poor_service": [
        "En {fac} la atención en {service} es pésima.",
        "{role} nos trató con gritos en {fac}.",
        "La cita de {service} me la dieron para dentro de {n} meses.",
        "Esperamos {n} horas en {fac} sin que nadie nos atienda.",
        "En {service} de {fac} no había especialista.",
        "Cancelaron la cita de {service} sin explicación.",
        "En {fac} perdieron la historia clínica de mi {rel}.",
        "El turno de {service} se consigue solo por internet y la página no abre.",
        "Mi {rel} salió de {fac} sin diagnóstico después de {n} horas.",
        "No dejan entrar acompañantes a {service} aunque sea un adulto mayor.",
    ],
    "irregularities": [
        "En {fac} registran atenciones que nunca se hicieron.",
        "{role} de {fac} firma asistencias falsas.",
        "Los equipos de {service} de {fac} están dañados hace meses y nadie los repara.",
        "Se llevan insumos de la bodega de {fac}.",
        "Las listas de espera de {service} en {fac} se manipulan.",
        "Contrataron a familiares de {role} en {fac}.",
        "{role} llega tarde todos los días y cobra horas extra.",
        "En {fac} compraron equipos de {service} que nunca se instalaron.",
        "Los informes de {service} se copian de un paciente a otro.",
        "{role} usa la ambulancia de {fac} para asuntos personales.",
    ],
    "corruption": [
        "{role} de {fac} pide {amount} dólares por {thing}.",
        "Para conseguir {thing} en {fac} hay que pagar {amount} dólares.",
        "En {fac} venden {thing} a quien paga.",
        "{role} cobra por adelantar {thing}.",
        "Me pidieron dinero en efectivo en {fac}.",
        "El contrato de {service} de {fac} tiene sobreprecio.",
        "{role} ofrece {thing} a cambio de un regalo.",
        "Un tramitador afuera de {fac} vende {thing} por {amount} dólares.",
        "Las compras de {fac} se adjudican siempre a la misma empresa.",
    ],
    "other": [
        "Quiero denunciar un problema en {fac}.",
        "No sé a quién más acudir por lo que pasa en {fac}.",
        "El trámite de {thing} en {fac} está detenido.",
        "Nadie responde los reclamos sobre {fac}.",
        "Tengo una duda sobre {thing} y nadie me orienta.",
        "Quiero saber si es normal lo que pasa en {service}.",
        "El call center me dio información equivocada sobre {thing}.",
        "Necesito que alguien revise mi caso de {thing}.",
    ],
}
CATEGORIES = list(BY_CATEGORY)
# A campaign's facts: each in three phrasings, filled with the campaign's own details.
CAMPAIGN_FACTS = {
    "medication": [
        [
            "En {fac} no entregan {med} desde {month_name}.",
            "Desde {month_name} no hay {med} en la farmacia de {fac}.",
            "Llevo desde {month_name} sin recibir {med} en {fac}.",
        ],
        [
            "El jefe de farmacia dice que el {med} se vende afuera en la farmacia {shop}.",
            "Nos mandan a comprar {med} a la farmacia {shop} de enfrente.",
            "En la farmacia {shop} sí tienen el {med} que falta en el hospital.",
        ],
        [
            "Somos muchos pacientes de {service} afectados.",
            "Todos los pacientes de {service} estamos sin {med}.",
            "En {service} nadie recibe su {med}.",
        ],
    ],
    "corruption": [
        [
            "{role} de {fac} cobra {amount} dólares por {thing}.",
            "Por {thing} en {fac} {role} pide {amount} dólares.",
            "Pagué {amount} dólares a {role} para {thing} en {fac}.",
        ],
        [
            "El pago se hace en efectivo en la cafetería {shop}.",
            "Hay que dejar el dinero en la cafetería {shop}.",
            "Lo cobran en la cafetería {shop} para que no quede registro.",
        ],
        [
            "Si no pagas te dejan sin {thing} de {service}.",
            "Sin pagar no hay {thing} en {service}.",
            "A los que no pagan les niegan {thing} de {service}.",
        ],
    ],
    "poor_service": [
        [
            "En {service} de {fac} atienden solo {n} pacientes al día.",
            "Solo dan {n} turnos diarios en {service} de {fac}.",
            "{fac} reparte apenas {n} fichas para {service} cada día.",
        ],
        [
            "{role} de {service} maltrata a los adultos mayores.",
            "Los adultos mayores sufren los gritos de {role} en {service}.",
            "{role} humilla a los ancianos que esperan en {service}.",
        ],
        [
            "La sala de {service} lleva cerrada desde {month_name}.",
            "Cerraron {service} en {month_name} sin avisar.",
            "Desde {month_name} no funciona {service}.",
        ],
    ],
}
SPAM = [
    "GANE DINERO DESDE CASA {n} DOLARES DIARIOS escriba al {phone} oferta limitada inversion segura",
    "jajaja esto no sirve para nada jajaja {n} {n} {n} prueba prueba prueba",
    "VOTE POR LA LISTA {n} el cambio verdadero para el seguro social comparta este mensaje",
    "asdf asdf qwerty {n} zxcv hola hola hola esto es una prueba del formulario",
]
MONTHS_ES = [
    "enero",
    "febrero",
    "marzo",
    "abril",
    "mayo",
    "junio",
    "julio",
    "agosto",
    "septiembre",
    "octubre",
    "noviembre",
    "diciembre",
]
SHOPS = [
    "Cruz Azul",
    "Fybeca",
    "Sana Sana",
    "Pharmacys",
    "Económica",
    "Medicity",
    "La Buena Salud",
    "San José",
    "El Descuento",
    "Vida Sana",
]


def facilities() -> list[tuple[str, str]]:
    """Every generated facility name and its province code."""
    return [(f"{kind} {city}", prov) for city, prov in CITIES.items() for kind in KINDS]


@dataclass
class Report:
    """One generated report."""

    body: str
    category: str
    received_on: str
    answers: dict[str, str]
    group: str = ""  # "" background; "campaign-N" or "spam-N" for planted ones
    channel: str = "browser"


@dataclass
class Corpus:
    reports: list[Report] = field(default_factory=list)

    def planted(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for k, r in enumerate(self.reports):
            if r.group:
                out.setdefault(r.group, []).append(k)
        return out


def _fill(rng: random.Random, template: str, ctx: dict[str, str]) -> str:
    values = {
        "n": str(rng.randint(2, 40)),
        "age": str(rng.randint(50, 90)),
        "rel": rng.choice(RELS),
        "day": rng.choice(DAYS),
        "time": rng.choice(TIMES),
        "service": rng.choice(SERVICES),
        "med": rng.choice(MEDS),
        "role": rng.choice(ROLES),
        "thing": rng.choice(THINGS),
        "amount": str(rng.choice([5, 10, 20, 30, 50, 80, 100, 150, 200, 300])),
        "phone": f"09{rng.randint(10_000_000, 99_999_999)}",
    }
    values.update(ctx)
    text = template.format(**values)
    return text[0].upper() + text[1:]


def _ordinary(rng: random.Random) -> str:
    parts = [rng.choice(WHO), rng.choice(WHAT), rng.choice(WHERE), rng.choice(CODA)]
    return " ".join(p for p in parts if p) + "."


def _answers(rng: random.Random, fac: str, prov: str, month: str, p: float) -> dict[str, str]:
    out = {}
    if rng.random() < p:
        out["province"] = prov
    if rng.random() < p * 0.8:
        out["facility"] = fac if rng.random() < 0.8 else fac.lower()
    if rng.random() < p * 0.8:
        out["month"] = month
    return out


def generate(
    seed: int,
    background: int,
    campaigns: int = 0,
    spam: int = 0,
    *,
    start: dt.date = dt.date(2025, 1, 1),
    days: int = 540,
    sizes: tuple[int, int] = (6, 15),
    spam_sizes: tuple[int, int] = (15, 40),
) -> Corpus:
    """A shuffled corpus: ``background`` ordinary reports, ``campaigns`` planted campaigns and
    ``spam`` planted floods."""
    rng = random.Random(seed)  # noqa: S311 - generated test data, not secrets
    facs = facilities()
    corpus = Corpus()

    def day(offset: int) -> dt.date:
        return start + dt.timedelta(days=offset)

    for _ in range(background):
        category = rng.choice(CATEGORIES)
        fac, prov = rng.choice(facs)
        when = day(rng.randrange(days))
        ctx = {"fac": fac}
        own = rng.sample(BY_CATEGORY[category], rng.randint(1, 3))
        generic = rng.sample(GENERIC, rng.randint(0, 2))
        sentences = [_fill(rng, t, ctx) for t in own + generic]
        sentences += [_ordinary(rng) for _ in range(rng.randint(1, 4))]
        rng.shuffle(sentences)
        month = (when - dt.timedelta(days=rng.randint(0, 40))).strftime("%Y-%m")
        corpus.reports.append(
            Report(
                " ".join(sentences),
                category,
                when.isoformat(),
                _answers(rng, fac, prov, month, 0.6),
                channel=rng.choice(("browser", "browser", "server-form")),
            )
        )
    for g in range(campaigns):
        category = rng.choice(list(CAMPAIGN_FACTS))
        fac, prov = rng.choice(facs)
        began = rng.randrange(days - 60)
        month_day = day(began)
        ctx = {
            "fac": fac,
            "med": rng.choice(MEDS),
            "role": rng.choice(ROLES),
            "shop": rng.choice(SHOPS),
            "service": rng.choice(SERVICES),
            "thing": rng.choice(THINGS),
            "amount": str(rng.choice([15, 25, 40, 60, 120, 250])),
            "n": str(rng.randint(5, 25)),
            "month_name": MONTHS_ES[month_day.month - 1],
        }
        for _ in range(rng.randint(*sizes)):
            facts = rng.sample(CAMPAIGN_FACTS[category], rng.randint(2, 3))
            sentences = [_fill(rng, rng.choice(phrasings), ctx) for phrasings in facts]
            sentences += [_fill(rng, t, {"fac": fac}) for t in rng.sample(GENERIC, rng.randint(0, 2))]
            sentences += [_ordinary(rng) for _ in range(rng.randint(1, 3))]
            rng.shuffle(sentences)
            when = day(began + rng.randint(0, 60))
            corpus.reports.append(
                Report(
                    " ".join(sentences),
                    category,
                    when.isoformat(),
                    _answers(rng, fac, prov, month_day.strftime("%Y-%m"), 0.8),
                    group=f"campaign-{g}",
                )
            )
    for g in range(spam):
        template = SPAM[g % len(SPAM)]
        fixed = {"phone": f"09{rng.randint(10_000_000, 99_999_999)}"}
        began = rng.randrange(days - 5)
        category = rng.choice(CATEGORIES)
        for _ in range(rng.randint(*spam_sizes)):
            text = _fill(rng, template, fixed)
            if rng.random() < 0.5:
                text = text.lower()
            if rng.random() < 0.3:
                text += " " + rng.choice(["!!!", "urgente", "ya", "hoy", "gratis"])
            corpus.reports.append(
                Report(
                    text,
                    category,
                    day(began + rng.randint(0, 3)).isoformat(),
                    {},
                    group=f"spam-{g}",
                    channel="server-form",
                )
            )
    rng.shuffle(corpus.reports)
    return corpus


# The outcomes of closed cases, and how often each is drawn.
OUTCOMES = ("substantiated", "not_substantiated", "referred", "insufficient_information",
            "duplicate", "out_of_scope")
OUTCOME_WEIGHTS = (20, 40, 15, 15, 8, 2)


def fill(book: object, corpus: Corpus, *, seed: int = 1, status_closed: float = 0.3) -> list[str]:
    """Write ``corpus`` into an open casebook's tables (cases, items, search index, answers), as
    an import would leave them; return the case ids in corpus order. Deadlines: seven in ten
    acknowledged (most within the 7 days), half of those with feedback; a closed case has an
    outcome (most often "not_substantiated", rarely "out_of_scope") and was closed 10 to 200 days
    after it was received (drawn from their own generator: the other columns stay as they were)."""
    from whistle.workstation.casebook import answers as answers_mod
    from whistle.workstation.casebook import deadlines

    rng = random.Random(seed)  # noqa: S311 - generated test data, not secrets
    closing = random.Random(seed + 7919)  # noqa: S311 - generated test data, not secrets
    db = book.db  # type: ignore[attr-defined]
    ids = []
    db.execute("BEGIN")
    top = db.execute("SELECT coalesce(max(rowid), 0) FROM items").fetchone()[0]
    for k, r in enumerate(corpus.reports):
        cid = f"{rng.getrandbits(64):016x}"
        ids.append(cid)
        received = r.received_on
        ack_on = feedback_on = None
        if rng.random() < 0.7:
            ack_on = (
                dt.date.fromisoformat(received)
                + dt.timedelta(days=rng.choice([0, 1, 2, 3, 5, 6, 7, 9, 14, 30]))
            ).isoformat()
            if rng.random() < 0.5:
                feedback_on = (
                    dt.date.fromisoformat(ack_on) + dt.timedelta(days=rng.randint(5, 120))
                ).isoformat()
        status = (
            "closed"
            if rng.random() < status_closed
            else rng.choice(("received", "acknowledged", "investigating"))
        )
        outcome = closed_on = None
        if status == "closed":
            outcome = closing.choices(OUTCOMES, weights=OUTCOME_WEIGHTS)[0]
            closed_on = (dt.date.fromisoformat(received)
                         + dt.timedelta(days=closing.randint(10, 200))).isoformat()
        db.execute(
            "INSERT INTO cases (id, received_on, status, status_on, channel, category, manifest_key, "
            "report_version, ack_due, ack_on, feedback_due, feedback_on, last_activity, unread, "
            "item_count, outcome, closed_on) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                cid,
                received,
                status,
                received,
                r.channel,
                r.category,
                "x",
                2,
                deadlines.ack_due(received),
                ack_on,
                deadlines.feedback_due(received, ack_on),
                feedback_on,
                received,
                1,
                1,
                outcome,
                closed_on,
            ),
        )
        rowid = top + k + 1
        db.execute(
            "INSERT INTO items (rowid, id, case_id, seq, kind, created_on, channel, version, "
            "body) VALUES (?,?,?,?,?,?,?,?,?)",
            (rowid, f"{rowid:016x}{k:08x}", cid, 1, "report", received, r.channel, 2, r.body),
        )
        db.execute("INSERT INTO items_fts (rowid, body, names) VALUES (?,?,?)", (rowid, r.body, ""))
        answers_mod.store(db, cid, r.answers)
    db.execute("COMMIT")
    return ids
