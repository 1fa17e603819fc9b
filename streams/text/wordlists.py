"""Function words, negations and clause breakers per language (sv, da, fi, nb, en).

Written for npsflow from grammar-book word classes (pronouns, articles/determiners, prepositions and
postpositions, conjunctions, auxiliary and modal verbs, degree and discourse adverbs, verb particles,
number words, interjections), not copied from a stopword package: those remove negations and judgement
words (inte, ikke, ei, not, bra, god, hyvä, good …), which are exactly what a complaint analysis needs.
Licence: part of npsflow (Apache-2.0).

Rules of these lists:
- Judgement words (bra, dålig, god, dårlig, hyvä, huono, good, bad, well …) are content words: never here.
- Negations are not function words either; they are listed in NEGATIONS and form bigrams (terms.py).
- A token is a function word when its casefolded surface form or its lemma is listed, so both are listed
  where simplemma's lemma differs (e.g. sv "fick" → "få").
- Light verbs that carry no topic (sv/da/nb få, fi saada, en get) are function words so that
  "fick inget svar" / "en saanut vastausta" / "didn't get an answer" pair the negation with the noun.
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


FUNCTION_WORDS: dict[str, frozenset[str]] = {
    "sv": _words("""
        jag mig mej min mitt mina du dig dej din ditt dina han honom hans hon henne hennes hen den det dess
        vi oss vår vårt våra ni er ert era de dem dom deras sig sej sin sitt sina man en ett någon något några
        nån nåt nåra denna detta dessa denne sådan sådant sådana vilken vilket vilka vem vad som själv själva
        varje varenda många alla allt all andra annan annat båda bägge samma egen eget egna
        i på till från med av för om under över efter före innan vid mot emot genom hos mellan bland åt
        sedan kring runt längs inom utom trots enligt per via bakom framför bredvid ur utan
        och eller men att när då eftersom så fast medan tills ifall både varken samt än
        också även bara just nu här där hit dit mycket lite väldigt ganska jätte mer mest mindre minst redan
        ännu fortfarande alltid ofta igen väl ju nog kanske nästan helt heller alls dock endast tyvärr
        verkligen faktiskt typ liksom hur varför var vart särskilt speciellt riktigt lika sådär
        ut in upp ner ned fram bort hem iväg tillbaka förbi
        vara är varit bli blir blev blivit ha har hade haft kunna kan kunde kunnat ska skall skulle vilja vill
        ville velat måste få får fick fått böra bör borde må lär bruka brukar göra gör gjorde gjort finnas
        finns fanns funnits
        noll två tre fyra fem sex sju åtta nio tio hundra tusen
        ja nej jo okej ok hej
    """),
    "da": _words("""
        jeg mig min mit mine du dig din dit dine han ham hans hun hende hendes den det dens dets vi os vores
        vor vort vore i jer jeres de dem deres sig sin sit sine man en et nogen noget nogle denne dette disse
        sådan sådant sådanne hvilken hvilket hvilke hvem hvad som der selv hver hvert alle alt al anden andet
        andre begge samme egen eget egne
        på til fra med af for om under over efter før inden ved mod imod gennem igennem uden hos mellem
        blandt ad siden omkring rundt langs indenfor udenfor trods ifølge per via bag foran
        og eller men at hvis når da fordi så mens indtil både hverken samt end enten
        også bare kun lige nu her hvor hvordan hvorfor hvornår meget lidt rigtig temmelig særlig særligt
        mere mest mindre mindst allerede endnu stadig altid ofte igen vel jo nok måske næsten helt heller
        overhovedet dog faktisk virkelig desværre slet
        ud ind op ned frem væk hjem tilbage forbi hen
        være er var været blive bliver blev blevet have har havde haft kunne kan kunnet skulle skal ville vil
        villet måtte må få får fik fået gøre gør gjorde gjort burde bør plejer pleje findes fandtes
        to tre fire fem seks syv otte ni ti hundrede tusind
        ja nej jo okay ok hej
    """),
    "nb": _words("""
        jeg meg min mitt mine mi du deg din ditt dine han ham hans hun henne hennes den det dens dets vi oss
        vår vårt våre dere deres de dem seg sin sitt sine si man en ei et noen noe denne dette disse slik
        slikt slike hvilken hvilket hvilke hvem hva som der selv hver hvert alle alt all annen annet andre
        begge samme egen eget egne
        i på til fra med av for om under over etter før innen ved mot gjennom uten hos mellom blant ad
        siden rundt langs trass ifølge per via bak foran
        og eller men at hvis når da fordi så mens både verken samt enn enten
        også bare kun akkurat nå her hvor hvordan hvorfor veldig mye mer mest mindre minst litt ganske
        svært altfor allerede ennå enda fortsatt fremdeles alltid ofte igjen vel jo nok kanskje nesten helt
        heller overhodet likevel dessverre faktisk virkelig egentlig liksom særlig spesielt
        ut inn opp ned fram frem vekk bort hjem tilbake forbi hen
        være er var vært bli blir ble blitt ha har hadde hatt kunne kan skulle skal ville vil måtte må få
        får fikk fått gjøre gjør gjorde gjort burde bør pleie pleier finnes fins fantes
        to tre fire fem seks sju syv åtte ni ti hundre tusen
        å ja nei jo ok okei hei
    """),
    "fi": _words("""
        minä mä mun minun minua minut minulle minulla minulta minusta minuun sinä sä sun sinun sinua sinut
        sinulle sinulla hän hänen häntä hänet hänelle hänellä häneltä me meidän meitä meille meillä meiltä
        te teidän teitä teille teillä he heidän heitä heille heillä heiltä se sen sitä sille sillä siltä
        siitä siinä siihen ne niiden niitä niille niillä niistä niihin nämä näiden näitä näille tämä tämän
        tätä tässä tästä tähän tälle tällä tuo tuon tuota nuo joka jonka jota jossa josta johon jolle jolla
        jotka joiden joita mikä minkä mitä missä mistä mihin millä kuka kenen ketä kenelle itse kaikki
        kaikkea kaikkien jokin jonkin joku jotain jotakin mitään kukaan mikään kenkään muu muut muuta sama
        samaa oma omat omaa
        kanssa ilman mukaan jälkeen ennen aikana takia vuoksi kautta yli alle luona lähellä kohti vastaan
        varten asti saakka sisällä ulkona päälle
        ja sekä tai vai mutta vaan että kun jos koska kuin vaikka jotta eli kunnes niin
        myös vain jo vielä nyt silloin täällä siellä todella tosi erittäin melko varsin liian ihan
        aivan vähän paljon enemmän eniten aina usein taas uudelleen kyllä ehkä melkein lähes täysin
        kuitenkaan kuitenkin valitettavasti oikein kovin yhtään edes tarpeeksi vasta sitten siis juuri miten miksi
        onko eikö
        olla olen olet on olemme olette ovat oli olin olit olimme olitte olivat ollut olleet ole olisi
        olisin olla voida voi voin voit voimme voitte voivat voisi täytyä täytyy saada saa sain sai saanut
        saaneet saisi tehdä teen tekee tein teki tehnyt
        yksi kaksi kolme neljä viisi kuusi seitsemän kahdeksan yhdeksän kymmenen sata tuhat
        joo juu no moi hei
    """),
    "en": _words("""
        i me my mine myself you your yours yourself he him his himself she her hers herself it its itself we
        us our ours ourselves they them their theirs themselves this that these those who whom whose which
        what there here a an the some any each every all both either other another such same own much many
        more most less least few lot lots
        in on at to from with of for about by under over after before into onto through between among during
        since until till around along within per via behind across against toward towards upon than as
        and or but if when because so while whether although though yet then also
        just only now very really quite pretty too far even still already always often again maybe perhaps
        almost totally completely actually how why where ever rather somewhat unfortunately basically anyway
        up down out off away back
        be am is are was were been being have has had having do does did done doing will would shall should
        can could may might must get gets got gotten getting
        one two three four five six seven eight nine ten hundred thousand
        yes ok okay oh hi hey please
    """),
}

# Negations: never unigram terms; each forms a bigram with the content word it scopes over (terms.py).
NEGATIONS: dict[str, frozenset[str]] = {
    "sv": _words("inte ej icke aldrig ingen inget inga ingenting"),
    "da": _words("ikke ej aldrig ingen intet ingenting"),
    "nb": _words("ikke ikkje aldri ingen intet ingenting inga"),
    "fi": _words("ei en et emme ette eivät eikä enkä etkä emmekä ettekä eivätkä älä älkää ettei jottei"),
    "en": _words("not no never nothing nobody none nor neither cannot"),
}

# Negation adverbs of the verb-second languages: in a main clause they follow the finite verb and negate it
# ("svarade aldrig", "virker ikke"); the determiners (ingen, inget …) negate the noun after them.
NEGATION_ADVERBS: dict[str, frozenset[str]] = {
    "sv": _words("inte ej icke aldrig"),
    "da": _words("ikke ej aldrig"),
    "nb": _words("ikke ikkje aldri"),
}

# The form a negation takes in a bigram when it is not its own lemma: Finnish negation verb forms → "ei".
NEGATION_FORM: dict[str, str] = {
    **{w: "ei" for w in NEGATIONS["fi"]},
    "cannot": "not",
}

# Words that end a negation's scope (coordination), besides punctuation.
BREAKERS: dict[str, frozenset[str]] = {
    "sv": _words("men och eller utan"),
    "da": _words("men og eller"),
    "nb": _words("men og eller"),
    "fi": _words("mutta ja tai vaan"),
    "en": _words("but and or"),
}

LANGS = tuple(FUNCTION_WORDS)


def is_function_word(lang: str, surface: str, lemma: str) -> bool:
    words = FUNCTION_WORDS[lang]
    return surface in words or lemma in words
